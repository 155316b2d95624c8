//! Configuration of the subscription controller: `graph.auth` (how it gets tokens) and
//! `[subscriptions]` (what it keeps alive). Referenced from `crate::config`; kept here so the
//! controller's keys live beside the code that reads them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::Secret;

/// A duration written as seconds (`90`) or with a unit (`"45s"`, `"15m"`, `"12h"`, `"3d"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. 90s, 15m, 12h, 3d"))?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
        };
        Ok(HumanDuration(Duration::from_secs(secs)))
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0 => write!(f, "0s"),
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(s) => HumanDuration::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `[graph.auth]`: OAuth2 client credentials for the Graph API (the controller only).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphAuthConfig {
    /// Token authority; the token URL is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: String,
    /// Default tenant of subscription items that name none.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The app registration (client) id.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// File holding the client secret (a mounted secret); trailing newlines ignored.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Certificate credential: the app's registered certificate (PEM) and its private key.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

/// Graph's pricing models for tenant-wide Teams message subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Model {
    A,
    B,
}

/// One `[[subscriptions.items]]` entry: a subscription the controller keeps alive.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionItem {
    /// Stable name: the `subscription` label of the metrics and the key of the desired state.
    pub name: String,
    /// Graph resource path, e.g. `/teams/getAllMessages` or `/chats/{id}/messages`.
    pub resource: String,
    /// `A` or `B`: appended as `?model=` (tenant-wide paths are metered).
    #[serde(default)]
    pub model: Option<Model>,
    #[serde(default = "default_change_types")]
    pub change_types: Vec<String>,
    /// Defaults to `graph.auth.tenant_id`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Public HTTPS URL of this bridge's `/notifications`.
    pub notification_url: String,
    /// Public HTTPS URL of this bridge's `/lifecycle`; without it Graph caps lifetimes at 1 h.
    #[serde(default)]
    pub lifecycle_url: Option<String>,
    /// Key id in `graph.keys_dir`: its `<id>.crt` becomes the `encryptionCertificate`. Required
    /// with `include_resource_data` (Graph encrypts to it); without, Graph needs no certificate.
    #[serde(default)]
    pub certificate_id: Option<String>,
    /// Requested lifetime, capped at Graph's limit (3 days with a lifecycle URL, 1 hour without).
    #[serde(default)]
    pub lifetime: Option<HumanDuration>,
    #[serde(default = "yes")]
    pub include_resource_data: bool,
}

fn default_change_types() -> Vec<String> {
    vec!["created".into(), "updated".into(), "deleted".into()]
}

fn yes() -> bool {
    true
}

/// `[subscriptions]`: the controller's timing and the desired subscriptions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Renew when less than this remains (at most half the lifetime).
    pub renew_margin: HumanDuration,
    /// Up to this much earlier, at random, so replicas and subscriptions spread out.
    pub jitter: HumanDuration,
    /// Full reconcile (list, create, renew, delete) at least this often.
    pub poll_interval: HumanDuration,
    /// Kafka consumer group / JetStream durable consumer reading the lifecycle stream.
    pub consumer_group: String,
    /// Lifecycle events older than this are ignored (a new consumer reads from the start).
    pub lifecycle_max_age: HumanDuration,
    /// Check that the notification and lifecycle URLs answer the validation handshake before
    /// asking Graph to create a subscription (turn off when the controller cannot reach the
    /// public URL).
    pub preflight_handshake: bool,
    /// Where the controller keeps, per subscription, when delivery was last known good (the
    /// start of a `missed` window), so a restart does not forget it. Without it a `missed`
    /// reports Graph's whole 4-hour retry window.
    #[serde(default)]
    pub state_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub items: Vec<SubscriptionItem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, secs, back) in [
            ("90", 90, "90s"),
            ("15m", 900, "15m"),
            ("12h", 43_200, "12h"),
            ("3d", 259_200, "3d"),
            ("61m", 3660, "61m"),
        ] {
            let d = HumanDuration::parse(s).unwrap();
            assert_eq!(d.0.as_secs(), secs);
            assert_eq!(d.to_string(), back);
        }
        assert!(HumanDuration::parse("3 weeks").is_err());
        assert!(HumanDuration::parse("m").is_err());
    }
}
