//! The deterministic event id (design.md §3): Graph redelivers, so the same notification must
//! get the same id for brokers (Kafka idempotence, JetStream `Nats-Msg-Id`) and consumers to
//! drop the copy. Computed with the pure-Rust `sha2`, so this crate needs no crypto provider.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `tenantId|resource|changeType|etag-or-lastModified`.
pub fn event_id(tenant: &str, resource: &str, change_type: &str, version: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    for part in [resource, change_type, version] {
        hasher.update(b"|");
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_deterministic_and_sensitive() {
        let a = event_id("t", "chats('c')/messages('1')", "created", "1");
        assert_eq!(a, event_id("t", "chats('c')/messages('1')", "created", "1"));
        assert_ne!(a, event_id("t", "chats('c')/messages('1')", "updated", "1"));
        assert_ne!(a, event_id("t", "chats('c')/messages('1')", "created", "2"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn event_id_is_the_sha256_of_the_parts_joined_by_bars() {
        // sha256(b"t|r|created|1"), computed independently (Python's hashlib).
        assert_eq!(
            event_id("t", "r", "created", "1"),
            "c2c66ada9ebe5ce43f6473bd039e47b8fc4afb97bfeec62776a3553b6fb91da9"
        );
    }
}
