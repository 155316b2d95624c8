//! Backfill: Graph does not deliver every notification (`missed`, a subscription removed or
//! expired, deliveries dropped after 4 hours of retries). The subscription controller publishes
//! each such window as a `resync_required` event; backfill reads those events, re-reads the
//! window from Graph's message APIs (`plan` decides which, `fill` reads and publishes) and
//! publishes every message under the event id its notification would have had, marked
//! `graphbridgeorigin = backfill`, so consumers dedupe as usual and never call Graph themselves.
//! `worker` is the long-running consumer, `cli` the operator's verb.

pub mod cli;
pub mod delta;
pub mod fill;
pub mod plan;
pub mod worker;
