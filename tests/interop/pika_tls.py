"""pika over TLS against Warren: PLAIN (guest) and EXTERNAL (client certificate).

Usage: pika_tls.py --port PORT --ca CA.pem --cert CLIENT.pem --key CLIENT.key
Prints 'N passed, N failed'.
"""
import argparse
import ssl
import sys

import pika

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--ca", required=True)
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
a = p.parse_args()

passed = failed = 0


def check(name, f):
    global passed, failed
    try:
        f()
        print("ok", name)
        passed += 1
    except Exception as e:  # noqa: BLE001 - report every failure
        print("FAIL", name, repr(e))
        failed += 1


def ctx(with_cert):
    c = ssl.create_default_context(cafile=a.ca)
    if with_cert:
        c.load_cert_chain(a.cert, a.key)
    return c


def round_trip(creds, with_cert):
    params = pika.ConnectionParameters(
        "localhost", a.port, "/", creds,
        ssl_options=pika.SSLOptions(ctx(with_cert), "localhost"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"over tls")
    for _ in range(100):
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m:
            assert body == b"over tls", body
            break
        conn.sleep(0.01)
    else:
        raise AssertionError("message not received")
    conn.close()


check("PLAIN over TLS", lambda: round_trip(pika.PlainCredentials("guest", "guest"), False))
check("EXTERNAL with a client certificate",
      lambda: round_trip(pika.credentials.ExternalCredentials(), True))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
