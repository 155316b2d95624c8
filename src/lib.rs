//! graphbridge's verbs beyond the ingress core: the composition root (`app`), the subscription
//! controller (`subscriptions`), replay (`replay`) and the newcomer's demo (`demo`). The
//! ingress itself is `graphbridge-core`; the event schema `graphbridge-event`; Graph's REST
//! API `graphbridge-graph-api`; the simulator `graphbridge-sim`.

pub mod app;
#[cfg(feature = "sim")]
pub mod demo;
#[cfg(feature = "kafka")]
pub mod replay;
pub mod subscriptions;
