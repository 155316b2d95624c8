//! How notifications become events: normalization and dead letters. The schema types, the
//! event id and the dedupe helper live in the `graphbridge-event` crate (re-exported here).

pub mod deadletter;
pub mod fetched;
pub mod normalize;

pub use graphbridge_event::{dedupe, v1};
