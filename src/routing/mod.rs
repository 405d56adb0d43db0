//! Message routing: which destinations an exchange delivers a message to.
//!
//! Every exchange owns one [`BindingTable`], indexed for its [`ExchangeKind`] so that
//! routing a message costs what RabbitMQ's own exchange types cost: a hash lookup for
//! direct, a walk of a word trie for topic ([`topic`]), a scan of the bindings for
//! headers ([`headers`]), and a copy of the destination set for fanout.
//!
//! The matching rules are RabbitMQ 3.x's, including the odd corners (the empty routing key
//! is zero words for topic; headers values compare as Erlang terms do with `==`). The
//! fixtures under `testdata/` were recorded from a real RabbitMQ 3.10.8 and the unit tests
//! replay them.

mod dedup;
mod dest_set;
pub(crate) mod erl_term;
pub mod hash_ring;
pub mod headers;
mod identity;
mod table;
pub mod topic;
mod word;

pub use amq_protocol::types::FieldTable;
pub use headers::{headers_match, validate_x_match, XMatch};
pub use table::BindingTable;
pub use topic::TopicTrie;

/// The exchange type of `x-delayed-message` exchanges (the rabbitmq-delayed-message-exchange
/// plugin's): they route as the type in their `x-delayed-type` argument, after holding
/// messages with an `x-delay` header for that many milliseconds.
pub const DELAYED_TYPE: &str = "x-delayed-message";

/// How an exchange routes: the four types that AMQP 0-9-1 defines and RabbitMQ ships
/// built in, and the two of RabbitMQ's plugins that Debian's package ships
/// (`rabbitmq_consistent_hash_exchange`, `rabbitmq_random_exchange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-consistent-hash`: one destination, chosen by hashing ([`hash_ring`]).
    ConsistentHash,
    /// `x-random`: one destination, chosen at random.
    Random,
}

impl ExchangeKind {
    /// Every kind, in the order RabbitMQ lists them.
    pub const ALL: [ExchangeKind; 6] = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Headers,
        ExchangeKind::Topic,
        ExchangeKind::ConsistentHash,
        ExchangeKind::Random,
    ];

    /// True for every type exchange.declare accepts, `x-delayed-message` included.
    pub fn is_declarable(s: &str) -> bool {
        s == DELAYED_TYPE || ExchangeKind::parse(s).is_some()
    }

    /// Parses the `type` field of exchange.declare. Matching is exact and case-sensitive,
    /// as RabbitMQ looks the type up in its registry by the binary it was sent.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            "x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            "x-random" => Some(ExchangeKind::Random),
            _ => None,
        }
    }

    /// The name RabbitMQ uses on the wire and in its management API.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::Random => "x-random",
        }
    }
}

impl std::fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips_through_its_name() {
        for kind in ExchangeKind::ALL {
            assert_eq!(ExchangeKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn kind_names_are_case_sensitive_and_exact() {
        for bad in [
            "Direct",
            "TOPIC",
            "",
            " fanout",
            "X-consistent-hash",
            "x-delayed-message",
            "header",
        ] {
            assert_eq!(ExchangeKind::parse(bad), None, "{bad:?}");
        }
    }
}
