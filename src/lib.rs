//! graphbridge's verbs beyond the ingress core: the composition root (`app`), the subscription
//! controller (`subscriptions`), backfill (`backfill`), replay (`replay`), DLP verdicts
//! (`verdicts`) and the newcomer's demo (`demo`). The
//! ingress itself is `graphbridge-core`; the event schema `graphbridge-event`; Graph's REST
//! API `graphbridge-graph-api`; the simulator `graphbridge-sim`.

pub mod app;
/// Shares replay's stop handling and exit codes, hence its feature.
#[cfg(feature = "kafka")]
pub mod backfill;
#[cfg(feature = "sim")]
pub mod demo;
/// Graph's notifications from Azure Event Hubs, read through its Kafka endpoint.
#[cfg(feature = "kafka")]
pub mod eventhubs;
#[cfg(feature = "kafka")]
pub mod replay;
pub mod state_file;
pub mod subscriptions;
/// Reads and writes through the same brokers as backfill, hence its feature.
#[cfg(feature = "kafka")]
pub mod verdicts;

/// A Graph REST client for `tenant` with the app's credentials (`[graph.auth]`): the
/// controller's, shared by backfill and the verdict worker.
pub fn graph_client(
    cfg: &graphbridge_core::config::Config,
    tenant: &str,
) -> Result<graphbridge_graph_api::subscriptions::GraphClient, String> {
    let http = graphbridge_graph_api::subscriptions::http_client();
    let tokens =
        graphbridge_graph_api::oauth::TokenSource::new(&cfg.graph.auth, tenant, http.clone())
            .map_err(|e| e.to_string())?;
    Ok(graphbridge_graph_api::subscriptions::GraphClient::new(
        &cfg.graph.api_base,
        http,
        std::sync::Arc::new(tokens),
    ))
}
