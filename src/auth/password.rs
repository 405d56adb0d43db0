//! Password hashes in RabbitMQ's format, so users exported from RabbitMQ (definitions JSON)
//! import unchanged and log in with the same passwords.
//!
//! `rabbit_password_hashing_sha256` (RabbitMQ's default) stores
//! `base64(salt ‖ SHA-256(salt ‖ utf8(password)))` with a 4-byte random salt;
//! `rabbit_password_hashing_sha512` is the same with SHA-512, and the legacy
//! `rabbit_password_hashing_md5` the same with MD5 (salted too: RabbitMQ's
//! `rabbit_password:salted_hash` wraps every scheme), so users of old installations log in.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// Length of the random salt RabbitMQ prepends (bytes).
const SALT_LEN: usize = 4;

/// A password hashing scheme, named as RabbitMQ names it in definitions files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashingAlgorithm {
    #[default]
    Sha256,
    Sha512,
    /// `rabbit_password_hashing_md5`: the legacy scheme of RabbitMQ before 3.6.
    Md5,
}

impl HashingAlgorithm {
    /// RabbitMQ's module name (`rabbit_password_hashing_sha256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashingAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    /// Parses RabbitMQ's module name; `None` for unknown schemes.
    pub fn parse(s: &str) -> Option<HashingAlgorithm> {
        match s {
            "rabbit_password_hashing_sha256" => Some(HashingAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Some(HashingAlgorithm::Sha512),
            "rabbit_password_hashing_md5" => Some(HashingAlgorithm::Md5),
            _ => None,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            HashingAlgorithm::Sha256 => Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            HashingAlgorithm::Sha512 => Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            HashingAlgorithm::Md5 => Md5::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        }
    }
}

/// Hashes `password` with a fresh random salt; the base64 text RabbitMQ stores.
pub fn hash_password(algorithm: HashingAlgorithm, password: &str) -> String {
    let salt: [u8; SALT_LEN] = rand::random();
    hash_with_salt(algorithm, &salt, password)
}

/// Hashes with a given salt (tests compare with hashes RabbitMQ produced).
pub fn hash_with_salt(
    algorithm: HashingAlgorithm,
    salt: &[u8; SALT_LEN],
    password: &str,
) -> String {
    let digest = algorithm.digest(salt, password.as_bytes());
    let mut raw = Vec::with_capacity(SALT_LEN + digest.len());
    raw.extend_from_slice(salt);
    raw.extend_from_slice(&digest);
    B64.encode(raw)
}

/// True when `password` matches the stored base64 `hash`. An empty hash (a user created
/// without a password) never matches, as in RabbitMQ.
pub fn verify(algorithm: HashingAlgorithm, hash: &str, password: &str) -> bool {
    let Ok(raw) = B64.decode(hash.trim()) else {
        return false;
    };
    if raw.len() <= SALT_LEN {
        return false;
    }
    let (salt, expected) = raw.split_at(SALT_LEN);
    constant_time_eq(&algorithm.digest(salt, password.as_bytes()), expected)
}

/// Compares without an early exit, so timing does not reveal how many bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash_password(HashingAlgorithm::Sha256, "s3cret");
        assert!(verify(HashingAlgorithm::Sha256, &h, "s3cret"));
        assert!(!verify(HashingAlgorithm::Sha256, &h, "s3cre"));
        let h = hash_password(HashingAlgorithm::Sha512, "pw");
        assert!(verify(HashingAlgorithm::Sha512, &h, "pw"));
        assert!(!verify(HashingAlgorithm::Sha256, &h, "pw"));
    }

    #[test]
    fn empty_or_garbage_hash_never_matches() {
        assert!(!verify(HashingAlgorithm::Sha256, "", ""));
        assert!(!verify(HashingAlgorithm::Sha256, "!!!", "x"));
        assert!(!verify(HashingAlgorithm::Sha256, "AAAA", ""));
    }

    /// A hash RabbitMQ 3.10.8 produced (`rabbitmqctl add_user` + `export_definitions`).
    #[test]
    fn verifies_rabbitmq_export() {
        let h = "aZ6mO05NVyknlVu5cmo579lBrg81HVI/ukSYomLyczfovpzp"; // guest / guest
        assert!(verify(HashingAlgorithm::Sha256, h, "guest"));
        assert!(!verify(HashingAlgorithm::Sha256, h, "Guest"));
        let h = "6lMa0zXRIBR5xGhuFZFL1kQHHodSNlJRe6x8Qrz0CCBFt5aD"; // alice / s3cret
        assert!(verify(HashingAlgorithm::Sha256, h, "s3cret"));
    }

    /// An MD5 hash (salt 01020304) that RabbitMQ 3.10.8 accepted through PUT /api/users
    /// with `rabbit_password_hashing_md5` and logged `m5` / `md5pw` in with.
    #[test]
    fn verifies_md5() {
        let h = "AQIDBI3Ab4iH1xcn+PIEm5vk1JM=";
        assert!(verify(HashingAlgorithm::Md5, h, "md5pw"));
        assert!(!verify(HashingAlgorithm::Md5, h, "md5pW"));
        assert!(!verify(HashingAlgorithm::Sha256, h, "md5pw"));
        assert_eq!(
            hash_with_salt(HashingAlgorithm::Md5, &[1, 2, 3, 4], "md5pw"),
            h
        );
    }
}
