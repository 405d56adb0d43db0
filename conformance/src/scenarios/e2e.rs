//! Exchange-to-exchange bindings (exchange.bind / exchange.unbind): routing through chains,
//! cycles and diamonds (each queue gets one copy), missing ends, the default exchange.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{options::*, types::FieldTable, Channel, ExchangeKind};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("e2e.bind_routes", "exchange.bind", bind_routes),
        scenario!("e2e.unbind_stops", "exchange.unbind", unbind_stops),
        scenario!("e2e.chain_of_three", "exchange.bind", chain),
        scenario!("e2e.source_key_filters", "exchange.bind", key_filters),
        scenario!("e2e.cycle_no_loop", "exchange.bind cycles", cycle),
        scenario!("e2e.diamond_one_copy", "exchange.bind", diamond),
        scenario!("e2e.missing_source_404", "exchange.bind", missing_source),
        scenario!(
            "e2e.missing_destination_404",
            "exchange.bind",
            missing_destination
        ),
        scenario!(
            "e2e.default_exchange_403",
            "exchange.bind default exchange",
            default_exchange
        ),
        scenario!("e2e.unbind_missing_ok", "exchange.unbind", unbind_missing),
        scenario!(
            "e2e.delete_destination_removes_binding",
            "exchange.delete / exchange.bind",
            delete_destination
        ),
        scenario!(
            "e2e.auto_delete_source",
            "exchange.bind auto-delete",
            auto_delete_source
        ),
    ]
}

async fn xbind(ch: &Channel, dest: &str, src: &str, rk: &str) -> Result<(), crate::Failure> {
    ch.exchange_bind(
        dest.into(),
        src.into(),
        rk.into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .step(&format!("exchange.bind {dest} <- {src} ({rk:?})"))
}

async fn xunbind(ch: &Channel, dest: &str, src: &str, rk: &str) -> lapin::Result<()> {
    ch.exchange_unbind(
        dest.into(),
        src.into(),
        rk.into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
}

async fn bind_routes(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (src, dst) = (cl.exchange(ctx.name("src")), cl.exchange(ctx.name("dst")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &src, ExchangeKind::Direct).await?;
        declare_exchange(&ch, &dst, ExchangeKind::Fanout).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &dst, "").await?;
        xbind(&ch, &dst, &src, "k").await?;
        publish(&ch, &src, "k", b"through").await?;
        publish(&ch, &src, "other", b"filtered").await?;
        publish(&ch, "", &q, b"marker").await?;
        let got = until_marker(&ch, &q, "marker").await?;
        check_eq("routed", got, vec!["through".to_string()])?;
        // The delivered message keeps the exchange it was published to.
        publish(&ch, &src, "k", b"again").await?;
        let m = get_one(&ch, &q, true).await?;
        check_eq(
            "exchange on delivery",
            m.delivery.exchange.as_str(),
            src.as_str(),
        )?;
        check_eq(
            "routing key on delivery",
            m.delivery.routing_key.as_str(),
            "k",
        )
    })
    .await
}

async fn unbind_stops(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (src, dst) = (cl.exchange(ctx.name("src")), cl.exchange(ctx.name("dst")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &src, ExchangeKind::Fanout).await?;
        declare_exchange(&ch, &dst, ExchangeKind::Fanout).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &dst, "").await?;
        xbind(&ch, &dst, &src, "").await?;
        publish(&ch, &src, "", b"1").await?;
        xunbind(&ch, &dst, &src, "").await.step("exchange.unbind")?;
        publish(&ch, &src, "", b"2").await?;
        publish(&ch, "", &q, b"marker").await?;
        check_eq(
            "routed",
            until_marker(&ch, &q, "marker").await?,
            vec!["1".to_string()],
        )
    })
    .await
}

async fn chain(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (a, b, c) = (
        cl.exchange(ctx.name("a")),
        cl.exchange(ctx.name("b")),
        cl.exchange(ctx.name("c")),
    );
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &a, ExchangeKind::Topic).await?;
        declare_exchange(&ch, &b, ExchangeKind::Direct).await?;
        declare_exchange(&ch, &c, ExchangeKind::Fanout).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        xbind(&ch, &b, &a, "x.#").await?;
        xbind(&ch, &c, &b, "x.y").await?;
        bind(&ch, &q, &c, "").await?;
        publish(&ch, &a, "x.y", b"match").await?;
        publish(&ch, &a, "x.z", b"stops-at-b").await?;
        publish(&ch, &a, "y", b"stops-at-a").await?;
        publish(&ch, "", &q, b"marker").await?;
        check_eq(
            "routed",
            until_marker(&ch, &q, "marker").await?,
            vec!["match".to_string()],
        )
    })
    .await
}

async fn key_filters(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (src, d1, d2) = (
        cl.exchange(ctx.name("src")),
        cl.exchange(ctx.name("d1")),
        cl.exchange(ctx.name("d2")),
    );
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &src, ExchangeKind::Topic).await?;
        declare_exchange(&ch, &d1, ExchangeKind::Fanout).await?;
        declare_exchange(&ch, &d2, ExchangeKind::Fanout).await?;
        let (q1, q2) = (ctx.name("q1"), ctx.name("q2"));
        declare_exclusive(&ch, &q1).await?;
        declare_exclusive(&ch, &q2).await?;
        bind(&ch, &q1, &d1, "").await?;
        bind(&ch, &q2, &d2, "").await?;
        xbind(&ch, &d1, &src, "*.red").await?;
        xbind(&ch, &d2, &src, "car.*").await?;
        for k in ["car.red", "bike.red", "car.blue", "bike.blue"] {
            publish(&ch, &src, k, k.as_bytes()).await?;
        }
        publish(&ch, "", &q1, b"marker").await?;
        publish(&ch, "", &q2, b"marker").await?;
        check_eq(
            "*.red",
            until_marker(&ch, &q1, "marker").await?,
            vec!["car.red".to_string(), "bike.red".to_string()],
        )?;
        check_eq(
            "car.*",
            until_marker(&ch, &q2, "marker").await?,
            vec!["car.red".to_string(), "car.blue".to_string()],
        )
    })
    .await
}

/// a -> b -> a (both fanout), a queue bound to each: one publish, one copy per queue, and
/// nothing loops.
async fn cycle(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (a, b) = (cl.exchange(ctx.name("a")), cl.exchange(ctx.name("b")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &a, ExchangeKind::Fanout).await?;
        declare_exchange(&ch, &b, ExchangeKind::Fanout).await?;
        xbind(&ch, &b, &a, "").await?;
        xbind(&ch, &a, &b, "").await?;
        let (qa, qb) = (ctx.name("qa"), ctx.name("qb"));
        declare_exclusive(&ch, &qa).await?;
        declare_exclusive(&ch, &qb).await?;
        bind(&ch, &qa, &a, "").await?;
        bind(&ch, &qb, &b, "").await?;
        publish(&ch, &a, "", b"once").await?;
        publish(&ch, &b, "", b"twice").await?;
        publish(&ch, "", &qa, b"marker").await?;
        publish(&ch, "", &qb, b"marker").await?;
        let want = vec!["once".to_string(), "twice".to_string()];
        check_eq(
            "queue on a",
            until_marker(&ch, &qa, "marker").await?,
            want.clone(),
        )?;
        check_eq("queue on b", until_marker(&ch, &qb, "marker").await?, want)?;
        // A self-binding is allowed and harmless too.
        xbind(&ch, &a, &a, "").await?;
        publish(&ch, &a, "", b"self").await?;
        publish(&ch, "", &qa, b"marker").await?;
        check_eq(
            "with a self-binding",
            until_marker(&ch, &qa, "marker").await?,
            vec!["self".to_string()],
        )
    })
    .await
}

/// a -> b -> q and a -> c -> q: the queue gets one copy.
async fn diamond(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (a, b, c) = (
        cl.exchange(ctx.name("a")),
        cl.exchange(ctx.name("b")),
        cl.exchange(ctx.name("c")),
    );
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        for x in [&a, &b, &c] {
            declare_exchange(&ch, x, ExchangeKind::Fanout).await?;
        }
        xbind(&ch, &b, &a, "").await?;
        xbind(&ch, &c, &a, "").await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &b, "").await?;
        bind(&ch, &q, &c, "").await?;
        bind(&ch, &q, &a, "").await?;
        publish(&ch, &a, "", b"one-copy").await?;
        publish(&ch, "", &q, b"marker").await?;
        check_eq(
            "copies",
            until_marker(&ch, &q, "marker").await?,
            vec!["one-copy".to_string()],
        )
    })
    .await
}

async fn missing_source(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let src = ctx.name("missing-src");
    let r = ch
        .exchange_bind(
            "amq.fanout".into(),
            src.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        404,
        &format!("NOT_FOUND - no exchange '{src}' in vhost '/'"),
    )?;
    expect_connection_usable(&c).await
}

async fn missing_destination(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let dst = ctx.name("missing-dst");
    let r = ch
        .exchange_bind(
            dst.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        404,
        &format!("NOT_FOUND - no exchange '{dst}' in vhost '/'"),
    )
}

async fn default_exchange(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &x, ExchangeKind::Fanout).await?;
        let r = ch
            .exchange_bind(
                x.as_str().into(),
                "".into(),
                "k".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            r,
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        )?;
        let ch = c.create_channel().await.step("channel.open")?;
        let r = ch
            .exchange_bind(
                "".into(),
                x.as_str().into(),
                "k".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            r,
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        )
    })
    .await
}

async fn unbind_missing(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    xunbind(&ch, "amq.fanout", "amq.direct", &ctx.name("never-bound"))
        .await
        .step("exchange.unbind of a missing binding")?;
    let missing = ctx.name("missing");
    xunbind(&ch, &missing, "amq.direct", "k")
        .await
        .step("exchange.unbind with a missing destination")?;
    sync(&ch).await
}

async fn delete_destination(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (src, dst) = (cl.exchange(ctx.name("src")), cl.exchange(ctx.name("dst")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &src, ExchangeKind::Fanout).await?;
        declare_exchange(&ch, &dst, ExchangeKind::Fanout).await?;
        xbind(&ch, &dst, &src, "").await?;
        // The source is "in use" by the exchange binding.
        let r = ch
            .exchange_delete(
                src.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: true,
                    nowait: false,
                },
            )
            .await;
        expect_error(
            r,
            406,
            &format!("PRECONDITION_FAILED - exchange '{src}' in vhost '/' in use"),
        )?;
        let (_c2, ch) = open(&ctx.uri).await?;
        ch.exchange_delete(dst.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .step("delete destination")?;
        // With its only binding gone, the source is now unused.
        ch.exchange_delete(
            src.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                nowait: false,
            },
        )
        .await
        .step("delete source if-unused")
    })
    .await
}

/// An auto-delete exchange is deleted when its last binding *as a source* goes, including an
/// exchange-to-exchange binding.
async fn auto_delete_source(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let (src, dst) = (cl.exchange(ctx.name("src")), cl.exchange(ctx.name("dst")));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange_ad(&ch, &src, ExchangeKind::Fanout).await?;
        declare_exchange(&ch, &dst, ExchangeKind::Fanout).await?;
        xbind(&ch, &dst, &src, "").await?;
        xunbind(&ch, &dst, &src, "").await.step("exchange.unbind")?;
        let r = ch
            .exchange_declare(
                src.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_error(
            r,
            404,
            &format!("NOT_FOUND - no exchange '{src}' in vhost '/'"),
        )
    })
    .await
}
