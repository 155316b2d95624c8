//! The event schema (v1) and how notifications become events.

pub mod deadletter;
pub mod dedupe;
pub mod normalize;
pub mod v1;
