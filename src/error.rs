//! Errors that go on the wire: a reply code, RabbitMQ-shaped reply text, the offending
//! method's ids, and whether they close the channel or the whole connection.

use std::fmt;

/// What an [`AmqpError`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// An error to report with channel.close or connection.close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: u16,
    /// Full reply text, `"NOT_FOUND - no queue 'x' in vhost '/'"`; at most 255 bytes.
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
    pub scope: Scope,
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl std::error::Error for AmqpError {}

/// Fits a reply text into a short string as RabbitMQ does: longer than 255 bytes keeps the
/// first 252 and appends `...`.
pub fn truncate_shortstr(mut s: String) -> String {
    if s.len() > 255 {
        let mut end = 252;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

macro_rules! ctor {
    ($(#[$doc:meta])* $fn:ident, $code:expr, $name:expr, $scope:expr) => {
        $(#[$doc])*
        pub fn $fn(detail: fmt::Arguments<'_>) -> AmqpError {
            AmqpError::new($code, $name, detail, $scope)
        }
    };
}

impl AmqpError {
    pub fn new(code: u16, name: &str, detail: fmt::Arguments<'_>, scope: Scope) -> AmqpError {
        let text = truncate_shortstr(format!("{name} - {detail}"));
        AmqpError {
            code,
            text,
            class_id: 0,
            method_id: 0,
            scope,
        }
    }

    /// Sets the class and method ids of the method that caused the error.
    pub fn with_method(mut self, class_id: u16, method_id: u16) -> AmqpError {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Turns a channel-level error into a connection-level one (RabbitMQ does this for some
    /// errors depending on context, e.g. access refused during the handshake).
    pub fn hard(mut self) -> AmqpError {
        self.scope = Scope::Connection;
        self
    }

    pub fn is_connection_level(&self) -> bool {
        self.scope == Scope::Connection
    }

    ctor!(
        connection_forced,
        320,
        "CONNECTION_FORCED",
        Scope::Connection
    );
    ctor!(access_refused, 403, "ACCESS_REFUSED", Scope::Channel);
    ctor!(not_found, 404, "NOT_FOUND", Scope::Channel);
    ctor!(resource_locked, 405, "RESOURCE_LOCKED", Scope::Channel);
    ctor!(
        precondition_failed,
        406,
        "PRECONDITION_FAILED",
        Scope::Channel
    );
    ctor!(frame_error, 501, "FRAME_ERROR", Scope::Connection);
    ctor!(syntax_error, 502, "SYNTAX_ERROR", Scope::Connection);
    ctor!(command_invalid, 503, "COMMAND_INVALID", Scope::Connection);
    ctor!(channel_error, 504, "CHANNEL_ERROR", Scope::Connection);
    ctor!(unexpected_frame, 505, "UNEXPECTED_FRAME", Scope::Connection);
    ctor!(resource_error, 506, "RESOURCE_ERROR", Scope::Connection);
    ctor!(not_allowed, 530, "NOT_ALLOWED", Scope::Connection);
    ctor!(not_implemented, 540, "NOT_IMPLEMENTED", Scope::Connection);
    ctor!(internal_error, 541, "INTERNAL_ERROR", Scope::Connection);

    /// A method id this broker does not know.
    pub fn unknown_method(class_id: u16, method_id: u16) -> AmqpError {
        AmqpError::command_invalid(format_args!(
            "unknown method (class {class_id}, method {method_id})"
        ))
        .with_method(class_id, method_id)
    }
}

/// Result of a protocol operation.
pub type AmqpResult<T> = Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_shaped_and_truncated() {
        let e = AmqpError::not_found(format_args!("no queue '{}' in vhost '/'", "q"));
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.scope, Scope::Channel);
        let long = "é".repeat(300);
        let e = AmqpError::not_found(format_args!("{long}"));
        assert!(e.text.len() <= 255);
    }
}
