//! The scenario list, one module per area. Add a scenario by writing an `async fn(Ctx) ->
//! Outcome` in the area's module and listing it in that module's `scenarios()` with the
//! `scenario!` macro.

use crate::Scenario;

/// Builds a [`Scenario`] from an async fn: `scenario!("name", "covers", fn_name)` or with a
/// fourth argument, the reason RabbitMQ 3.10 is known to differ.
#[macro_export]
macro_rules! scenario {
    ($name:expr, $covers:expr, $f:path) => {
        $crate::Scenario {
            name: $name,
            covers: $covers,
            rabbitmq_differs: None,
            run: |ctx| Box::pin($f(ctx)),
        }
    };
    ($name:expr, $covers:expr, $f:path, $differs:expr) => {
        $crate::Scenario {
            name: $name,
            covers: $covers,
            rabbitmq_differs: Some($differs),
            run: |ctx| Box::pin($f(ctx)),
        }
    };
}

pub mod ack;
pub mod alternate;
pub mod basic;
pub mod binding;
pub mod cancel;
pub mod channel;
pub mod confirm;
pub mod connection;
pub mod content;
pub mod e2e;
pub mod exchange;
pub mod ext;
pub mod lifetime;
pub mod qos;
pub mod queue;
pub mod routing;
pub mod tx;
pub mod wire;

pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(connection::scenarios());
    v.extend(channel::scenarios());
    v.extend(exchange::scenarios());
    v.extend(e2e::scenarios());
    v.extend(alternate::scenarios());
    v.extend(queue::scenarios());
    v.extend(lifetime::scenarios());
    v.extend(binding::scenarios());
    v.extend(routing::scenarios());
    v.extend(basic::scenarios());
    v.extend(qos::scenarios());
    v.extend(ack::scenarios());
    v.extend(content::scenarios());
    v.extend(confirm::scenarios());
    v.extend(tx::scenarios());
    v.extend(cancel::scenarios());
    v.extend(wire::scenarios());
    v.extend(ext::scenarios());
    v
}
