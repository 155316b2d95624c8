//! The raw archive keeps authenticated items for `replay --reprocess`, but not their
//! `clientState`: whoever can read that topic would learn the secret that authenticates Graph's
//! notifications. An archived item holds instead a keyed fingerprint of the secret that
//! matched: HMAC-SHA256 keyed with the secret over the item's subscription id. It names which
//! configured secret to check against, reveals nothing about the secret (short of guessing it),
//! and differs between subscriptions, so equal secrets cannot be spotted across them.
//!
//! Reprocessing restores the clientState from the configured secrets ([`unseal`]); an item
//! whose fingerprint matches none of them (its secret was rotated out of the configuration) is
//! rejected like a wrong clientState. Items archived before this format still carry their
//! clientState in clear and are checked as before.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use serde_json::value::RawValue;

use crate::secret::Secret;

/// The archived item's field holding the fingerprint, in place of `clientState`.
pub const FINGERPRINT_FIELD: &str = "clientStateFingerprint";
const CLIENT_STATE_FIELD: &str = "clientState";
/// Versions the scheme, so another one can be told apart.
const PREFIX: &str = "hmac-sha256:";
const LABEL: &[u8] = b"graphbridge raw archive clientState\0";

/// The fingerprint of `client_state` for an item of `subscription_id`.
pub fn fingerprint(client_state: &str, subscription_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, client_state.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(LABEL);
    ctx.update(subscription_id.as_bytes());
    let tag = ctx.sign();
    format!("{PREFIX}{}", hex::encode(&tag.as_ref()[..16]))
}

type Fields<'a> = BTreeMap<String, &'a RawValue>;

/// The item as archived: `raw` without its clientState, with the fingerprint instead.
pub fn seal(raw: &RawValue, client_state: &str, subscription_id: &str) -> Vec<u8> {
    let mut fields: Fields<'_> =
        serde_json::from_str(raw.get()).expect("an authenticated item is a JSON object");
    fields.remove(CLIENT_STATE_FIELD);
    let fp = serde_json::value::to_raw_value(&fingerprint(client_state, subscription_id))
        .expect("a string serializes");
    fields.insert(FINGERPRINT_FIELD.into(), &fp);
    serde_json::to_vec(&fields).expect("JSON fields serialize")
}

/// Why an archived item could not be given back its clientState.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    #[error("not a JSON object with a subscriptionId")]
    Malformed,
    #[error("no configured clientState matches the archived fingerprint (rotated out?)")]
    NoSecretMatches,
}

/// The item as the pipeline takes it: a sealed item with the configured secret whose
/// fingerprint it holds put back as its clientState; an item archived in the old format
/// (clientState in clear) as it is.
pub fn unseal(archived: &str, secrets: &[Secret]) -> Result<String, UnsealError> {
    let mut fields: Fields<'_> =
        serde_json::from_str(archived).map_err(|_| UnsealError::Malformed)?;
    let Some(stored) = fields.remove(FINGERPRINT_FIELD) else {
        return Ok(archived.to_string());
    };
    let stored: &str = serde_json::from_str(stored.get()).map_err(|_| UnsealError::Malformed)?;
    let subscription: &str = fields
        .get("subscriptionId")
        .and_then(|s| serde_json::from_str(s.get()).ok())
        .ok_or(UnsealError::Malformed)?;
    let secret = secrets
        .iter()
        .find(|s| fingerprint(s.expose(), subscription) == stored)
        .ok_or(UnsealError::NoSecretMatches)?;
    let cs = serde_json::value::to_raw_value(secret.expose()).expect("a string serializes");
    fields.insert(CLIENT_STATE_FIELD.into(), &cs);
    Ok(serde_json::to_string(&fields).expect("JSON fields serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn item(cs: &str, sub: &str) -> Box<RawValue> {
        serde_json::value::to_raw_value(&json!({
            "subscriptionId": sub, "clientState": cs, "tenantId": "t",
            "encryptedContent": {"data": "AAAA", "dataKey": "BBBB"}
        }))
        .unwrap()
    }

    #[test]
    fn a_sealed_item_holds_no_client_state_and_unseals_with_the_configured_secret() {
        let raw = item("s3cr3t-state", "sub-1");
        let sealed = String::from_utf8(seal(&raw, "s3cr3t-state", "sub-1")).unwrap();
        assert!(!sealed.contains("s3cr3t-state"), "{sealed}");
        assert!(!sealed.contains("clientState\""), "{sealed}");
        let secrets = [Secret::new("old"), Secret::new("s3cr3t-state")];
        let back: Value = serde_json::from_str(&unseal(&sealed, &secrets).unwrap()).unwrap();
        let original: Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn a_rotated_out_secret_and_another_subscription_do_not_match() {
        let sealed = String::from_utf8(seal(&item("a", "sub-1"), "a", "sub-1")).unwrap();
        assert_eq!(
            unseal(&sealed, &[Secret::new("b")]),
            Err(UnsealError::NoSecretMatches)
        );
        // Bound to the subscription: the same secret elsewhere has another fingerprint.
        assert_ne!(fingerprint("a", "sub-1"), fingerprint("a", "sub-2"));
    }

    #[test]
    fn items_archived_in_clear_are_read_as_they_are() {
        let old = item("a", "sub-1");
        assert_eq!(unseal(old.get(), &[]).unwrap(), old.get());
        assert_eq!(unseal("[1]", &[]), Err(UnsealError::Malformed));
    }
}
