//! Config entries → the subscriptions the controller wants to exist, validated without I/O
//! beyond reading the public certificates from the keys directory.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};

use graphbridge_core::config::subscriptions::{Model, SubscriptionsConfig};
use graphbridge_core::config::Config;
use graphbridge_graph_api::subscriptions::{same_resource, Subscription};

/// Graph's limits for chatMessage subscriptions (graph-protocol.md §1).
pub const MAX_WITH_LIFECYCLE: Duration = Duration::from_secs(4320 * 60);
pub const MAX_WITHOUT_LIFECYCLE: Duration = Duration::from_secs(60 * 60);
pub const MIN_LIFETIME: Duration = Duration::from_secs(45 * 60);
/// Requested expirations stay this far inside Graph's cap, so clock skew between us and Graph
/// cannot push a request over it (Graph answers 400).
const SKEW_GUARD: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("invalid [[subscriptions.items]]:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// One subscription the controller keeps alive.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub name: String,
    /// With `?model=` when configured: exactly what Graph is asked for.
    pub resource: String,
    /// Comma list in a stable order (Graph's format).
    pub change_type: String,
    pub tenant_id: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    /// With `include_resource_data`: the certificate Graph encrypts resource data to.
    pub encryption: Option<Encryption>,
    /// Capped at Graph's limit.
    pub lifetime: Duration,
    pub client_state: String,
}

/// `encryptionCertificateId` and `encryptionCertificate` of a subscription with resource data.
#[derive(Debug, Clone, PartialEq)]
pub struct Encryption {
    pub certificate_id: String,
    /// base64 DER of `<certificate_id>.crt`.
    pub certificate: String,
}

fn normalize_resource(r: &str) -> String {
    let r = r.trim();
    if r.starts_with('/') {
        r.to_string()
    } else {
        format!("/{r}")
    }
}

fn change_set(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Desired {
    /// Whether `s` is this subscription (same resource and notification URL: ours).
    pub fn matches(&self, s: &Subscription) -> bool {
        same_resource(&self.resource, &s.resource) && self.notification_url == s.notification_url
    }

    /// Whether `s` can be kept (renewed) rather than replaced: what cannot be PATCHed agrees.
    pub fn compatible(&self, s: &Subscription) -> bool {
        change_set(&self.change_type) == change_set(&s.change_type)
            && self.lifecycle_url == s.lifecycle_notification_url
    }

    /// Graph's cap for this subscription.
    pub fn max_lifetime(&self) -> Duration {
        if self.lifecycle_url.is_some() {
            MAX_WITH_LIFECYCLE
        } else {
            MAX_WITHOUT_LIFECYCLE
        }
    }

    /// The expiration to ask for now.
    pub fn expiration(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let d = self.lifetime.min(self.max_lifetime() - SKEW_GUARD);
        now + chrono::Duration::from_std(d).expect("bounded")
    }

    /// The body of a create request.
    pub fn to_subscription(&self, now: DateTime<Utc>) -> Subscription {
        Subscription {
            id: String::new(),
            resource: self.resource.clone(),
            change_type: self.change_type.clone(),
            notification_url: self.notification_url.clone(),
            lifecycle_notification_url: self.lifecycle_url.clone(),
            expiration_date_time: self.expiration(now),
            client_state: Some(self.client_state.clone()),
            include_resource_data: Some(self.encryption.is_some()),
            encryption_certificate: self.encryption.as_ref().map(|e| e.certificate.clone()),
            encryption_certificate_id: self.encryption.as_ref().map(|e| e.certificate_id.clone()),
            latest_supported_tls_version: Some("v1_2".into()),
        }
    }
}

fn read_certificate(keys_dir: &Path, id: &str) -> Result<String, String> {
    let path = keys_dir.join(format!("{id}.crt"));
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "certificate_id {id:?}: cannot read {} ({e}); `graphbridge keys generate` writes it beside the key",
            path.display()
        )
    })?;
    let der = graphbridge_core::crypto::keyring::certificate_der(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("{}: not an X.509 certificate: {e}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der))
}

/// The desired state from the configuration. Lists every problem at once.
pub fn from_config(cfg: &Config) -> Result<Vec<Desired>, DesiredError> {
    let sc: &SubscriptionsConfig = &cfg.subscriptions;
    let mut problems = Vec::new();
    let client_state = match cfg.client_states() {
        Ok(s) if !s.is_empty() => s[0].expose().to_string(),
        Ok(_) => {
            problems.push(
                "graph.client_state must name at least one secret: new subscriptions use the first"
                    .into(),
            );
            String::new()
        }
        Err(e) => {
            problems.push(e.to_string());
            String::new()
        }
    };
    let mut out: Vec<Desired> = Vec::new();
    for (i, item) in sc.items.iter().enumerate() {
        let at = if item.name.is_empty() {
            format!("item {i}")
        } else {
            format!("item {:?}", item.name)
        };
        let mut bad = |m: String| problems.push(format!("{at}: {m}"));
        if item.name.is_empty() {
            bad("name is required".into());
        }
        if out.iter().any(|d| d.name == item.name) {
            bad("duplicate name".into());
        }
        if item.resource.trim().is_empty() || item.resource.contains('?') {
            bad("resource must be a path without a query (use model = \"A\" or \"B\")".into());
        }
        let Some(tenant_id) = item
            .tenant_id
            .clone()
            .or_else(|| cfg.graph.auth.tenant_id.clone())
        else {
            bad("tenant_id is required (or set graph.auth.tenant_id)".into());
            continue;
        };
        for c in &item.change_types {
            if !["created", "updated", "deleted"].contains(&c.as_str()) {
                bad(format!(
                    "change_types: {c:?} is not created, updated or deleted"
                ));
            }
        }
        if item.change_types.is_empty() {
            bad("change_types must not be empty".into());
        }
        for (key, url) in [
            ("notification_url", Some(&item.notification_url)),
            ("lifecycle_url", item.lifecycle_url.as_ref()),
        ] {
            if let Some(url) = url {
                if graphbridge_graph_api::subscriptions::is_event_hub(url) {
                    // Graph's two forms: EventHub:https://<vault>.vault.azure.net/secrets/<name>
                    // ?tenantId=<tid>, or EventHub:https://<namespace>.servicebus.windows.net
                    // /eventhubname/<hub>?tenantId=<tid>.
                    let rest = &url["EventHub:".len()..];
                    if !rest.starts_with("https://") || !rest.contains("tenantId=") {
                        bad(format!(
                            "{key}: an Event Hubs URL is EventHub:https://… with ?tenantId=<tenant> (a Key Vault secret or a namespace and hub)"
                        ));
                    }
                } else if !(url.starts_with("https://") || url.starts_with("http://")) {
                    bad(format!(
                        "{key} must be an http(s) URL (Graph requires https) or an EventHub: URL"
                    ));
                }
            }
        }
        let encryption = match (&item.certificate_id, item.include_resource_data) {
            (Some(id), true) => match read_certificate(&cfg.graph.keys_dir, id) {
                Ok(certificate) => Some(Encryption {
                    certificate_id: id.clone(),
                    certificate,
                }),
                Err(e) => {
                    bad(e);
                    continue;
                }
            },
            (None, true) => {
                bad("certificate_id is required with include_resource_data = true (Graph encrypts the message to it)".into());
                continue;
            }
            // Graph sends no resource data, so it needs no certificate: one named is unused.
            (_, false) => None,
        };
        let mut resource = normalize_resource(&item.resource);
        if let Some(m) = item.model {
            resource.push_str(match m {
                Model::A => "?model=A",
                Model::B => "?model=B",
            });
        }
        let cap = if item.lifecycle_url.is_some() {
            MAX_WITH_LIFECYCLE
        } else {
            MAX_WITHOUT_LIFECYCLE
        };
        let lifetime = item.lifetime.map(|l| l.0).unwrap_or(cap).min(cap);
        if lifetime < MIN_LIFETIME {
            tracing::info!(name = %item.name, "lifetime under 45 minutes: Graph raises it to 45");
        }
        out.push(Desired {
            name: item.name.clone(),
            resource,
            change_type: item.change_types.join(","),
            tenant_id,
            notification_url: item.notification_url.clone(),
            lifecycle_url: item.lifecycle_url.clone(),
            encryption,
            lifetime,
            client_state: client_state.clone(),
        });
    }
    if sc.renew_margin.0.is_zero() {
        problems.push("subscriptions.renew_margin must be positive".into());
    }
    if sc.poll_interval.0 < Duration::from_secs(1) {
        problems.push("subscriptions.poll_interval must be at least 1s".into());
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(DesiredError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graphbridge_core::config::subscriptions::{HumanDuration, SubscriptionItem};
    use graphbridge_core::config::{OneOrMany, Secret};

    fn cfg(dir: &Path) -> Config {
        let mut cfg = Config::defaults();
        cfg.graph.client_state = OneOrMany::Many(vec![Secret::new("first"), Secret::new("second")]);
        cfg.graph.keys_dir = dir.to_path_buf();
        cfg.graph.auth.tenant_id = Some("t1".into());
        let key = graphbridge_core::crypto::certgen::generate("k1", 2048).unwrap();
        std::fs::write(dir.join("k1.crt"), &key.certificate_pem).unwrap();
        cfg
    }

    fn item(name: &str) -> SubscriptionItem {
        toml::from_str(&format!(
            "name = \"{name}\"\nresource = \"teams/getAllMessages\"\nnotification_url = \"https://b.example/notifications\"\ncertificate_id = \"k1\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn items_become_desired_with_graph_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg(dir.path());
        let mut a = item("a");
        a.model = Some(Model::B);
        a.lifetime = Some(HumanDuration::parse("10d").unwrap());
        let mut b = item("b");
        b.resource = "/chats/getAllMessages".into();
        b.lifecycle_url = Some("https://b.example/lifecycle".into());
        cfg.subscriptions.items = vec![a, b];
        let d = from_config(&cfg).unwrap();
        assert_eq!(d[0].resource, "/teams/getAllMessages?model=B");
        assert_eq!(d[0].change_type, "created,updated,deleted");
        assert_eq!(d[0].client_state, "first");
        assert_eq!(d[0].tenant_id, "t1");
        // No lifecycle URL: one hour at most, and a little less so skew cannot exceed it.
        let now = Utc::now();
        let exp = d[0].expiration(now) - now;
        assert!(exp <= chrono::Duration::minutes(60) && exp >= chrono::Duration::minutes(55));
        assert_eq!(d[1].lifetime, MAX_WITH_LIFECYCLE);
        let der = base64::engine::general_purpose::STANDARD
            .decode(&d[1].encryption.as_ref().unwrap().certificate)
            .unwrap();
        assert!(x509_parser::parse_x509_certificate(&der).is_ok());
        assert!(d[0].matches(&d[0].to_subscription(now)));
        assert!(same_resource(
            "/Teams/getAllMessages?model=A",
            "teams/getAllMessages"
        ));
    }

    #[test]
    fn event_hubs_urls_in_both_of_graphs_forms_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg(dir.path());
        let mut vault = item("vault");
        vault.notification_url =
            "EventHub:https://contoso.vault.azure.net/secrets/graph-hub?tenantId=t1".into();
        vault.lifecycle_url = Some(vault.notification_url.clone());
        let mut rbac = item("rbac");
        rbac.resource = "/chats/getAllMessages".into();
        rbac.notification_url =
            "EventHub:https://contoso.servicebus.windows.net/eventhubname/graph?tenantId=t1".into();
        cfg.subscriptions.items = vec![vault, rbac];
        let d = from_config(&cfg).unwrap();
        assert!(d[0]
            .notification_url
            .starts_with("EventHub:https://contoso.vault"));
        assert_eq!(d[0].lifecycle_url, Some(d[0].notification_url.clone()));

        let mut bad = item("bad");
        bad.notification_url = "EventHub:contoso/graph".into();
        cfg.subscriptions.items = vec![bad];
        let err = from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("EventHub:https://… with ?tenantId="), "{err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg(dir.path());
        cfg.graph.auth.tenant_id = None;
        let mut a = item("a");
        a.change_types = vec!["created".into(), "edited".into()];
        a.tenant_id = Some("t2".into());
        a.certificate_id = Some("missing".into());
        let b = item("a");
        cfg.subscriptions.items = vec![a, b];
        let err = from_config(&cfg).unwrap_err().to_string();
        for needle in ["\"edited\"", "missing.crt", "tenant_id is required"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn without_resource_data_no_certificate_is_needed_or_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg(dir.path());
        let basic: SubscriptionItem = toml::from_str(
            "name = \"ids-only\"\nresource = \"chats/getAllMessages\"\nnotification_url = \"https://b.example/notifications\"\ninclude_resource_data = false\n",
        )
        .expect("certificate_id is optional");
        let mut rich = basic.clone();
        rich.name = "rich".into();
        rich.include_resource_data = true;
        cfg.subscriptions.items = vec![basic.clone()];
        let d = from_config(&cfg).unwrap();
        let s = d[0].to_subscription(Utc::now());
        assert_eq!(s.include_resource_data, Some(false));
        assert_eq!(s.encryption_certificate, None);
        assert_eq!(s.encryption_certificate_id, None);

        cfg.subscriptions.items = vec![basic, rich];
        let err = from_config(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("rich") && err.contains("certificate_id is required"),
            "{err}"
        );
    }
}
