//! Users: a name, a password hash in RabbitMQ's format, and tags.

use super::password::{self, HashingAlgorithm};

/// A broker user. Tags are free-form as in RabbitMQ; the ones with meaning are
/// `administrator`, `monitoring`, `policymaker`, `management` (and `impersonator`, which
/// may publish with any `user-id`).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    /// base64(salt ‖ digest); empty when the user has no password (cannot log in with one).
    pub password_hash: String,
    pub hashing_algorithm: HashingAlgorithm,
    pub tags: Vec<String>,
}

impl User {
    /// A user with `password` hashed with RabbitMQ's default scheme (SHA-256).
    pub fn with_password(name: &str, password: &str, tags: Vec<String>) -> User {
        User {
            name: name.to_string(),
            password_hash: password::hash_password(HashingAlgorithm::Sha256, password),
            hashing_algorithm: HashingAlgorithm::Sha256,
            tags,
        }
    }

    /// A user with an already computed hash (definitions import, management API).
    pub fn with_hash(
        name: &str,
        password_hash: &str,
        hashing_algorithm: HashingAlgorithm,
        tags: Vec<String>,
    ) -> User {
        User {
            name: name.to_string(),
            password_hash: password_hash.to_string(),
            hashing_algorithm,
            tags,
        }
    }

    pub fn check_password(&self, password: &str) -> bool {
        password::verify(self.hashing_algorithm, &self.password_hash, password)
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn is_administrator(&self) -> bool {
        self.has_tag("administrator")
    }

    /// RabbitMQ's `impersonator` tag: may publish with any `user-id` property.
    pub fn is_impersonator(&self) -> bool {
        self.has_tag("impersonator")
    }

    /// Tags as RabbitMQ exports them: comma-separated (`"administrator,monitoring"`).
    pub fn tags_string(&self) -> String {
        self.tags.join(",")
    }
}

/// Parses a tag list as RabbitMQ accepts it: comma- or space-separated, blanks dropped.
pub fn parse_tags(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(
            parse_tags("administrator, monitoring"),
            vec!["administrator", "monitoring"]
        );
        assert!(parse_tags("").is_empty());
        let u = User::with_password("a", "b", parse_tags("administrator"));
        assert!(u.is_administrator() && u.check_password("b") && !u.check_password("c"));
    }
}
