//! Keys and the `encryptedContent` algorithm (graph-protocol.md §4).

pub mod certgen;
pub mod decrypt;
pub mod encrypt;
pub mod key_cache;
pub mod keyring;
pub mod reload;
