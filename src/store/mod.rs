//! Durable state on disk. For now: the definitions file (durable exchanges, queues and
//! bindings). Messages are not persisted yet.

pub mod definitions;
