//! The alternate-exchange argument of exchange.declare: unroutable messages go to the AE.

use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, ExchangeKind,
};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("ae.unroutable_goes_to_ae", "alternate-exchange", unroutable),
        scenario!("ae.routable_not_copied", "alternate-exchange", routable),
        scenario!(
            "ae.mandatory_no_return",
            "alternate-exchange + mandatory",
            mandatory_no_return
        ),
        scenario!(
            "ae.missing_ae_dropped_or_returned",
            "alternate-exchange",
            missing_ae
        ),
        scenario!(
            "ae.ae_unroutable_returned",
            "alternate-exchange + mandatory",
            ae_unroutable
        ),
        scenario!("ae.chain", "alternate-exchange", ae_chain),
        scenario!("ae.cycle_terminates", "alternate-exchange", ae_cycle),
        scenario!(
            "ae.internal_ae",
            "alternate-exchange + internal",
            internal_ae
        ),
    ]
}

fn ae_args(ae: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(ae.into()),
    );
    t
}

async fn declare_with_ae(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    ae: &str,
) -> Result<(), Failure> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        ae_args(ae),
    )
    .await
    .step(&format!(
        "exchange.declare {name} with alternate-exchange {ae}"
    ))
}

/// Publishes with confirms and `mandatory`, returns (acked, returned reply if any).
async fn publish_check(
    ch: &Channel,
    x: &str,
    rk: &str,
    body: &[u8],
    mandatory: bool,
) -> Result<(bool, Option<(u16, String)>), Failure> {
    let conf = publish_confirmed(ch, x, rk, body, mandatory).await?;
    let acked = conf.is_ack();
    Ok((
        acked,
        conf.take_message()
            .map(|m| (m.reply_code, m.reply_text.to_string())),
    ))
}

async fn unroutable(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (x, ae) = (cl.exchange(ctx.name("x")), cl.exchange(ctx.name("ae")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &ae, ExchangeKind::Fanout).await?;
        declare_with_ae(&ch, &x, ExchangeKind::Direct, &ae).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &ae, "").await?;
        let props = BasicProperties::default().with_message_id("ae-1".into());
        publish_props(&ch, &x, "no-binding", b"to-ae", props.clone()).await?;
        let m = get_one(&ch, &q, true).await?;
        check_eq("body", m.delivery.data.as_slice(), b"to-ae".as_slice())?;
        check_eq(
            "exchange is the original",
            m.delivery.exchange.as_str(),
            x.as_str(),
        )?;
        check_eq(
            "routing key is the original",
            m.delivery.routing_key.as_str(),
            "no-binding",
        )?;
        check_eq("properties", m.delivery.properties.clone(), props)
    })
    .await
}

async fn routable(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (x, ae) = (cl.exchange(ctx.name("x")), cl.exchange(ctx.name("ae")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &ae, ExchangeKind::Fanout).await?;
        declare_with_ae(&ch, &x, ExchangeKind::Direct, &ae).await?;
        let (q, qae) = (ctx.name("q"), ctx.name("qae"));
        declare_exclusive(&ch, &q).await?;
        declare_exclusive(&ch, &qae).await?;
        bind(&ch, &q, &x, "k").await?;
        bind(&ch, &qae, &ae, "").await?;
        publish(&ch, &x, "k", b"routed").await?;
        publish(&ch, &x, "other", b"unrouted").await?;
        publish(&ch, "", &q, b"marker").await?;
        publish(&ch, "", &qae, b"marker").await?;
        check_eq(
            "main queue",
            until_marker(&ch, &q, "marker").await?,
            vec!["routed".to_string()],
        )?;
        check_eq(
            "ae queue",
            until_marker(&ch, &qae, "marker").await?,
            vec!["unrouted".to_string()],
        )
    })
    .await
}

async fn mandatory_no_return(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (x, ae) = (cl.exchange(ctx.name("x")), cl.exchange(ctx.name("ae")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &ae, ExchangeKind::Fanout).await?;
        declare_with_ae(&ch, &x, ExchangeKind::Direct, &ae).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &ae, "").await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .step("confirm.select")?;
        let (acked, ret) = publish_check(&ch, &x, "no-binding", b"m", true).await?;
        check("acked", acked)?;
        check_eq("basic.return", ret, None)?;
        get_one(&ch, &q, true).await.map(|_| ())
    })
    .await
}

async fn missing_ae(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_with_ae(
            &ch,
            &x,
            ExchangeKind::Direct,
            &ctx.name("ae-that-does-not-exist"),
        )
        .await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .step("confirm.select")?;
        let (acked, ret) = publish_check(&ch, &x, "k", b"dropped", false).await?;
        check("acked (dropped)", acked)?;
        check_eq("no return without mandatory", ret, None)?;
        let (acked, ret) = publish_check(&ch, &x, "k", b"returned", true).await?;
        check("acked (returned)", acked)?;
        check_eq("basic.return", ret, Some((312, "NO_ROUTE".to_string())))
    })
    .await
}

async fn ae_unroutable(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (x, ae) = (cl.exchange(ctx.name("x")), cl.exchange(ctx.name("ae")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &ae, ExchangeKind::Direct).await?;
        declare_with_ae(&ch, &x, ExchangeKind::Direct, &ae).await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .step("confirm.select")?;
        let (_, ret) = publish_check(&ch, &x, "k", b"nowhere", true).await?;
        check_eq(
            "basic.return when the AE routes nowhere either",
            ret,
            Some((312, "NO_ROUTE".to_string())),
        )
    })
    .await
}

async fn ae_chain(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (x, ae1, ae2) = (
        cl.exchange(ctx.name("x")),
        cl.exchange(ctx.name("ae1")),
        cl.exchange(ctx.name("ae2")),
    );
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &ae2, ExchangeKind::Fanout).await?;
        declare_with_ae(&ch, &ae1, ExchangeKind::Direct, &ae2).await?;
        declare_with_ae(&ch, &x, ExchangeKind::Direct, &ae1).await?;
        let (q1, q2) = (ctx.name("q1"), ctx.name("q2"));
        declare_exclusive(&ch, &q1).await?;
        declare_exclusive(&ch, &q2).await?;
        bind(&ch, &q1, &ae1, "only-this").await?;
        bind(&ch, &q2, &ae2, "").await?;
        publish(&ch, &x, "only-this", b"stops-at-ae1").await?;
        publish(&ch, &x, "other", b"falls-to-ae2").await?;
        publish(&ch, "", &q1, b"marker").await?;
        publish(&ch, "", &q2, b"marker").await?;
        check_eq(
            "ae1 queue",
            until_marker(&ch, &q1, "marker").await?,
            vec!["stops-at-ae1".to_string()],
        )?;
        check_eq(
            "ae2 queue",
            until_marker(&ch, &q2, "marker").await?,
            vec!["falls-to-ae2".to_string()],
        )
    })
    .await
}

async fn ae_cycle(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (a, b) = (cl.exchange(ctx.name("a")), cl.exchange(ctx.name("b")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_with_ae(&ch, &a, ExchangeKind::Direct, &b).await?;
        declare_with_ae(&ch, &b, ExchangeKind::Direct, &a).await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .step("confirm.select")?;
        let (acked, ret) = publish_check(&ch, &a, "k", b"loop", true).await?;
        check("acked", acked)?;
        check_eq(
            "returned, not looping",
            ret,
            Some((312, "NO_ROUTE".to_string())),
        )?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &b, "k").await?;
        let (_, ret) = publish_check(&ch, &a, "k", b"via-b", true).await?;
        check_eq("no return", ret, None)?;
        let m = get_one(&ch, &q, true).await?;
        check_eq("body", m.delivery.data.as_slice(), b"via-b".as_slice())?;
        expect_empty(&ch, &q).await
    })
    .await
}

async fn internal_ae(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (x, ae) = (cl.exchange(ctx.name("x")), cl.exchange(ctx.name("ae")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        ch.exchange_declare(
            ae.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                internal: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("declare internal AE")?;
        declare_with_ae(&ch, &x, ExchangeKind::Direct, &ae).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &ae, "").await?;
        publish(&ch, &x, "k", b"via-internal-ae").await?;
        let m = get_one(&ch, &q, true).await?;
        check_eq(
            "body",
            m.delivery.data.as_slice(),
            b"via-internal-ae".as_slice(),
        )
    })
    .await
}
