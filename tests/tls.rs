//! amqps: TLS with certificates generated here (rcgen), next to the plain listener.
//! lapin (rustls) logs in with PLAIN and with EXTERNAL (client certificate CN); pika does
//! the same; a client certificate from an unknown CA is refused at the TLS layer.

use crate::common;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_cert: String,
    client_key: String,
}

pub(crate) fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (p.self_signed(&key).unwrap(), key)
}

pub(crate) fn leaf(
    sans: Vec<String>,
    cn: &str,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> (String, String) {
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Warren tests");
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA, a server certificate for localhost / 127.0.0.1, a client certificate with
/// CN=tls-user, written to a fresh directory.
fn pki() -> Pki {
    let dir = common::temp_data_dir().with_extension("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_cert, ca_key) = ca("Warren test CA");
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        "localhost",
        &ca_cert,
        &ca_key,
    );
    let (client_cert, client_key) = leaf(vec![], "tls-user", &ca_cert, &ca_key);
    let files = [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server_cert),
        ("server.key", server_key),
        ("client.pem", client_cert.clone()),
        ("client.key", client_key.clone()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    Pki {
        ca_pem: ca_cert.pem(),
        dir,
        client_cert,
        client_key,
    }
}

async fn tls_broker(pki: &Pki) -> warren::BrokerHandle {
    let broker = common::start_broker_with(|c| {
        c.tls = Some(warren::tls::TlsConfig {
            port: 0,
            cert_file: pki.dir.join("server.pem"),
            key_file: pki.dir.join("server.key"),
            ca_file: Some(pki.dir.join("ca.pem")),
            verify_peer: true,
            fail_if_no_peer_cert: false,
        });
    })
    .await;
    broker.broker.add_user("tls-user", "", vec![]).unwrap();
    broker
        .broker
        .set_permissions("tls-user", "/", ".*", ".*", ".*")
        .unwrap();
    broker
}

async fn round_trip(conn: &Connection) {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let _confirm = ch
        .basic_publish(
            "".into(),
            q.name().clone(),
            Default::default(),
            b"secret",
            Default::default(),
        )
        .await
        .unwrap();
    let got = common::within(DEADLINE, async {
        loop {
            let opts = lapin::options::BasicGetOptions { no_ack: true };
            if let Some(m) = ch.basic_get(q.name().clone(), opts).await.unwrap() {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_plain_and_external_over_tls() {
    let pki = pki();
    let broker = tls_broker(&pki).await;
    let port = broker.tls_addr.expect("tls listener").port();

    // PLAIN over TLS, server verified against our CA.
    let conn = common::within(
        DEADLINE,
        Connection::connect_with_config(
            &format!("amqps://guest:guest@localhost:{port}/%2f"),
            ConnectionProperties::default(),
            OwnedTLSConfig {
                identity: None,
                cert_chain: Some(pki.ca_pem.clone()),
            },
            lapin::runtime::default_runtime().unwrap(),
        ),
    )
    .await
    .expect("TLS + PLAIN");
    round_trip(&conn).await;

    // EXTERNAL: the client certificate's CN is the user.
    let conn = common::within(
        DEADLINE,
        Connection::connect_with_config(
            &format!("amqps://localhost:{port}/%2f?auth_mechanism=external"),
            ConnectionProperties::default(),
            OwnedTLSConfig {
                identity: Some(OwnedIdentity::PKCS8 {
                    pem: pki.client_cert.clone().into_bytes(),
                    key: pki.client_key.clone().into_bytes(),
                }),
                cert_chain: Some(pki.ca_pem.clone()),
            },
            lapin::runtime::default_runtime().unwrap(),
        ),
    )
    .await
    .expect("TLS + EXTERNAL");
    round_trip(&conn).await;
    let users: Vec<String> = broker
        .broker
        .connections
        .iter()
        .map(|c| c.user.clone())
        .collect();
    assert!(users.contains(&"tls-user".to_string()), "{users:?}");

    // The plain listener still works beside it.
    let plain = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    round_trip(&plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let pki = pki();
    let broker = tls_broker(&pki).await;
    let port = broker.tls_addr.unwrap().port();
    let (other_ca, other_key) = ca("Someone else");
    let (cert, key) = leaf(vec![], "tls-user", &other_ca, &other_key);
    let r = common::within(
        DEADLINE,
        Connection::connect_with_config(
            &format!("amqps://localhost:{port}/%2f?auth_mechanism=external"),
            ConnectionProperties::default(),
            OwnedTLSConfig {
                identity: Some(OwnedIdentity::PKCS8 {
                    pem: cert.into_bytes(),
                    key: key.into_bytes(),
                }),
                cert_chain: Some(pki.ca_pem.clone()),
            },
            lapin::runtime::default_runtime().unwrap(),
        ),
    )
    .await;
    assert!(r.is_err(), "a certificate from an unknown CA was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_over_tls() {
    let pki = pki();
    let broker = tls_broker(&pki).await;
    let port = broker.tls_addr.unwrap().port().to_string();
    let d = |f: &str| pki.dir.join(f).to_string_lossy().into_owned();
    let out = common::within(
        Duration::from_secs(60),
        tokio::process::Command::new("/usr/bin/python3")
            .args([
                "tests/interop/pika_tls.py",
                "--port",
                &port,
                "--ca",
                &d("ca.pem"),
                "--cert",
                &d("client.pem"),
                "--key",
                &d("client.key"),
            ])
            .output(),
    )
    .await
    .expect("python3 with pika (see tests/run.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pika over TLS failed");
    assert!(stdout.contains("2 passed, 0 failed"));
}
