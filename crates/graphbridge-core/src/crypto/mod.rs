//! Keys and the `encryptedContent` algorithm (graph-protocol.md §4).

pub mod certgen;
pub mod decrypt;
pub mod encrypt;
pub mod key_cache;
pub mod keyring;
pub mod reload;

/// Random bytes from the process's one crypto provider (aws-lc-rs).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("system RNG");
    b
}
