//! Graph's side of the protocol: generating and encrypting notifications as Graph would.

pub mod generate;
