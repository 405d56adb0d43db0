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

pub mod exchange;
pub mod queue;
pub mod routing;

pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(exchange::scenarios());
    v.extend(queue::scenarios());
    v.extend(routing::scenarios());
    v
}
