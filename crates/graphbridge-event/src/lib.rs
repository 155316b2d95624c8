//! graphbridge's event schema, for producers and consumers alike: the CloudEvents v1 types
//! (`v1`) and the verdict events (`verdict`), the deterministic event id (`id`) and a dedupe helper for consumers (`dedupe`).
//! No I/O, no crypto provider, no broker client: a downstream Rust consumer depends on this
//! crate alone. The JSON Schemas are in the repository's `schema/` folder and embedded here.

pub mod dedupe;
pub mod id;
pub mod v1;
pub mod verdict;

pub use id::event_id;

/// JSON Schema of the message event, v1 (`schema/teams-message.v1.json`).
pub const MESSAGE_SCHEMA_JSON: &str = include_str!("../../../schema/teams-message.v1.json");
/// JSON Schema of the lifecycle event, v1 (`schema/lifecycle.v1.json`).
pub const LIFECYCLE_SCHEMA_JSON: &str = include_str!("../../../schema/lifecycle.v1.json");
/// JSON Schema of the verdict event, v1 (`schema/message-verdict.v1.json`).
pub const VERDICT_SCHEMA_JSON: &str = include_str!("../../../schema/message-verdict.v1.json");
/// JSON Schema of the verdict audit event, v1 (`schema/message-verdict-audit.v1.json`).
pub const AUDIT_SCHEMA_JSON: &str = include_str!("../../../schema/message-verdict-audit.v1.json");
