//! Per-(user, vhost) permissions: three regular expressions (configure, write, read)
//! matched against resource names as RabbitMQ's internal backend does.
//!
//! RabbitMQ runs `re:run(Name, Pattern)`: the pattern is *not* anchored (so `.*` allows
//! everything, `^$` or the empty pattern allows nothing, `foo` allows any name containing
//! "foo"). The default exchange is checked under the name `amq.default`.

use regex::Regex;
use std::fmt;

/// Which of the three permissions an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// One permission pattern: the text as given (exported as is) and its compiled form.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
    /// `.*`: matches every name; skips the regex on the publish path.
    any: bool,
}

impl Pattern {
    /// Compiles `source`; an empty pattern means `^$` (matches nothing but ""), as RabbitMQ.
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        let effective = if source.is_empty() { "^$" } else { source };
        Ok(Pattern {
            source: source.to_string(),
            regex: Regex::new(effective)?,
            any: source == ".*",
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &str) -> bool {
        self.any || self.regex.is_match(name)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A user's permissions in one vhost.
#[derive(Debug, Clone, PartialEq)]
pub struct Permission {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permission {
    /// Compiles the three patterns; the error names the first invalid one.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, regex::Error> {
        Ok(Permission {
            configure: Pattern::new(configure)?,
            write: Pattern::new(write)?,
            read: Pattern::new(read)?,
        })
    }

    /// `.*` for all three: what the default user gets on the default vhost.
    pub fn full() -> Permission {
        Permission::new(".*", ".*", ".*").expect("static pattern")
    }

    /// True when `name` may be accessed with `access`.
    pub fn allows(&self, access: Access, name: &str) -> bool {
        match access {
            Access::Configure => self.configure.matches(name),
            Access::Write => self.write.matches(name),
            Access::Read => self.read.matches(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_like_rabbitmq() {
        let p = Permission::new("foo", "^$", "").unwrap();
        assert!(p.allows(Access::Configure, "foo"));
        assert!(p.allows(Access::Configure, "xfooy"));
        assert!(!p.allows(Access::Configure, "bar"));
        assert!(!p.allows(Access::Write, "x"));
        assert!(!p.allows(Access::Read, "x"));
        assert!(p.allows(Access::Read, ""));
        assert!(Permission::full().allows(Access::Write, "anything"));
        assert!(Permission::new("(", ".*", ".*").is_err());
    }
}
