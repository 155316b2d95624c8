//! Microsoft Graph's wire formats and the checks on them. No I/O here.

pub mod envelope;
pub mod message;
pub mod resource;
