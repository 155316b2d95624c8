//! Who may get events into the brokers. A request first proves it came from Graph
//! (`tokens`: the validationTokens JWTs, checked against Microsoft's signing keys from `jwks`),
//! then each item proves it belongs to one of our subscriptions: the `clientState` secret
//! (constant time, several for rotation) and the tenant allowlist. Only an [`Authenticated`]
//! item can reach the decryptor.

pub mod archive;
pub mod jwks;
pub mod tokens;

use subtle::ConstantTimeEq;

use crate::graph::envelope::ChangeNotification;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("clientState missing")]
    MissingClientState,
    #[error("clientState does not match any configured secret")]
    WrongClientState,
    #[error("tenant {0} is not in graph.tenants")]
    TenantNotAllowed(String),
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingClientState | AuthError::WrongClientState => "client_state",
            AuthError::TenantNotAllowed(_) => "tenant_not_allowed",
        }
    }
}

/// A notification item that passed authentication. Constructed only by [`Authenticator`].
#[derive(Debug)]
pub struct Authenticated<'a> {
    item: ChangeNotification<'a>,
}

impl<'a> Authenticated<'a> {
    pub fn item(&self) -> &ChangeNotification<'a> {
        &self.item
    }

    /// The same item, no longer borrowing the request body `body` it was parsed from (for
    /// work on other threads; see [`ChangeNotification::detach`]).
    pub fn detach(self, body: &bytes::Bytes) -> Authenticated<'static> {
        Authenticated {
            item: self.item.detach(body),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    client_states: Vec<Secret>,
    tenants: Vec<String>,
}

impl Authenticator {
    pub fn new(client_states: Vec<Secret>, tenants: Vec<String>) -> Self {
        Authenticator {
            client_states,
            tenants: tenants
                .into_iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn authenticate<'a>(
        &self,
        item: ChangeNotification<'a>,
    ) -> Result<Authenticated<'a>, AuthError> {
        let got = item
            .client_state
            .as_ref()
            .map(Secret::expose)
            .ok_or(AuthError::MissingClientState)?;
        // Compare against every secret without stopping early, so timing tells nothing about
        // which one (if any) matched.
        let matched = self
            .client_states
            .iter()
            .fold(subtle::Choice::from(0), |acc, s| {
                acc | s.expose().as_bytes().ct_eq(got.as_bytes())
            });
        if !bool::from(matched) {
            return Err(AuthError::WrongClientState);
        }
        if !self.tenants.is_empty() && !self.tenants.contains(&item.tenant_id.to_ascii_lowercase())
        {
            return Err(AuthError::TenantNotAllowed(item.tenant_id.to_string()));
        }
        Ok(Authenticated { item })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn item(cs: Option<&str>, tenant: &str) -> ChangeNotification<'static> {
        ChangeNotification::deserialize(&serde_json::json!({
            "subscriptionId": "s", "tenantId": tenant, "clientState": cs
        }))
        .unwrap()
        .detach(&bytes::Bytes::new())
    }

    #[test]
    fn any_configured_secret_passes_and_others_fail() {
        let a = Authenticator::new(vec![Secret::new("old"), Secret::new("new")], vec![]);
        assert!(a.authenticate(item(Some("old"), "t")).is_ok());
        assert!(a.authenticate(item(Some("new"), "t")).is_ok());
        assert_eq!(
            a.authenticate(item(Some("ne"), "t")).unwrap_err(),
            AuthError::WrongClientState
        );
        assert_eq!(
            a.authenticate(item(None, "t")).unwrap_err(),
            AuthError::MissingClientState
        );
    }

    #[test]
    fn tenant_allowlist() {
        let a = Authenticator::new(vec![Secret::new("s")], vec!["AAA".into()]);
        assert!(a.authenticate(item(Some("s"), "aaa")).is_ok());
        assert_eq!(
            a.authenticate(item(Some("s"), "bbb")).unwrap_err(),
            AuthError::TenantNotAllowed("bbb".into())
        );
    }
}
