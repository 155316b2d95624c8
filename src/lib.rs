//! graphbridge's verbs beyond the ingress core: the composition root (`app`), the subscription
//! controller (`subscriptions`), backfill (`backfill`), replay (`replay`) and the newcomer's
//! demo (`demo`). The
//! ingress itself is `graphbridge-core`; the event schema `graphbridge-event`; Graph's REST
//! API `graphbridge-graph-api`; the simulator `graphbridge-sim`.

pub mod app;
/// Shares replay's stop handling and exit codes, hence its feature.
#[cfg(feature = "kafka")]
pub mod backfill;
#[cfg(feature = "sim")]
pub mod demo;
#[cfg(feature = "kafka")]
pub mod replay;
pub mod state_file;
pub mod subscriptions;
