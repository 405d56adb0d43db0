//! Durable state on disk: the definitions file (durable exchanges, queues and bindings) and
//! the message log (persistent messages of durable queues).

pub mod definitions;
pub mod disk;
pub mod fault;
pub mod log;
pub mod prealloc;
pub mod record;
