//! A bounded cache of unwrapped symmetric keys, keyed by a hash of the certificate id and
//! `dataKey`. If Graph ever reuses a wrapped key, the RSA private-key operation (the dominant
//! cost) is skipped. Verification is not weakened: the HMAC is still checked with the cached
//! key on every item, and only keys whose HMAC verified are inserted, so an attacker cannot
//! plant entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use aws_lc_rs::digest;
use zeroize::Zeroizing;

/// What the cache is keyed by: [`fingerprint`] of a wrapped key.
pub type Digest = [u8; 32];

pub struct KeyCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<Digest, Zeroizing<[u8; 32]>>,
    /// Insertion order, for first-in-first-out eviction.
    order: VecDeque<Digest>,
}

/// Hash of what identifies a wrapped key: the certificate id and the `dataKey` text.
pub fn fingerprint(certificate_id: &str, data_key: &str) -> Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(certificate_id.as_bytes());
    ctx.update(&[0]);
    ctx.update(data_key.as_bytes());
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

impl KeyCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        KeyCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, fp: &Digest) -> Option<Zeroizing<[u8; 32]>> {
        if self.capacity == 0 {
            return None;
        }
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .get(fp)
            .cloned()
    }

    /// Whether the key is cached (without copying it).
    pub fn contains(&self, fp: &Digest) -> bool {
        self.capacity > 0
            && self
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys
                .contains_key(fp)
    }

    /// Remembers a key whose HMAC verified.
    pub fn insert(&self, fp: Digest, key: &[u8; 32]) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.keys.insert(fp, Zeroizing::new(*key)).is_none() {
            inner.order.push_back(fp);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.keys.remove(&old); // Zeroizing wipes it
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fifo_and_disabled_mode() {
        let c = KeyCache::new(2);
        for i in 0..3u8 {
            c.insert(fingerprint("id", &i.to_string()), &[i; 32]);
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&fingerprint("id", "0")).is_none(), "oldest evicted");
        assert_eq!(*c.get(&fingerprint("id", "2")).unwrap(), [2; 32]);
        assert_ne!(fingerprint("a", "bc"), fingerprint("ab", "c"));
        let off = KeyCache::new(0);
        off.insert(fingerprint("id", "x"), &[1; 32]);
        assert!(off.get(&fingerprint("id", "x")).is_none());
    }
}
