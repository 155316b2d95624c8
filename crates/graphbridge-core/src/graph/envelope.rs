//! Graph's delivery body: `{"value":[changeNotification…], "validationTokens":[JWT…]}`.
//!
//! The batch is parsed in two steps: the envelope keeps each item as raw JSON, then each item
//! is parsed on its own, so one malformed item is rejected alone instead of failing its batch,
//! and the raw bytes stay available for the dead-letter stream and the raw archive.
//!
//! Both steps borrow from the request body: the items are slices of it and their strings
//! (the kilobytes of base64 above all) are not copied unless JSON escapes force it.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub value: Vec<&'a RawValue>,
    /// One JWT per (app, tenant) pair; `null` entries mean a misconfigured service principal.
    #[serde(default)]
    pub validation_tokens: Option<Vec<Option<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }

    /// The CloudEvents `type` of a message event with this change.
    pub fn event_type(self) -> &'static str {
        match self {
            ChangeType::Created => "graph.teams.message.created",
            ChangeType::Updated => "graph.teams.message.updated",
            ChangeType::Deleted => "graph.teams.message.deleted",
        }
    }
}

/// Strings are `Cow`: borrowed from the body, owned when JSON escapes forced a copy (or when
/// built here). serde borrows a `Cow<str>` field only when it is spelled so, and never inside
/// an `Option`, hence this helper for the optional ones.
fn borrowed_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed>::deserialize(d)?.map(|b| b.0))
}

/// One `changeNotification`. Lifecycle notifications share the type and carry `lifecycleEvent`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification<'a> {
    #[serde(borrow)]
    pub subscription_id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt")]
    pub subscription_expiration_date_time: Option<Cow<'a, str>>,
    #[serde(default)]
    pub change_type: Option<ChangeType>,
    /// Echo of the subscription's secret; compared in constant time, never logged.
    #[serde(default)]
    pub client_state: Option<Secret>,
    #[serde(borrow)]
    pub tenant_id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt")]
    pub resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub resource_data: Option<ResourceData<'a>>,
    #[serde(default, borrow)]
    pub encrypted_content: Option<EncryptedContent<'a>>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt")]
    pub lifecycle_event: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResourceData<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_opt")]
    pub id: Option<Cow<'a, str>>,
    #[serde(
        rename = "@odata.type",
        default,
        borrow,
        deserialize_with = "borrowed_opt"
    )]
    pub odata_type: Option<Cow<'a, str>>,
    #[serde(
        rename = "@odata.id",
        default,
        borrow,
        deserialize_with = "borrowed_opt"
    )]
    pub odata_id: Option<Cow<'a, str>>,
}

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent<'a> {
    #[serde(borrow)]
    pub data: Cow<'a, str>,
    #[serde(borrow)]
    pub data_key: Cow<'a, str>,
    #[serde(borrow)]
    pub data_signature: Cow<'a, str>,
    #[serde(borrow)]
    pub encryption_certificate_id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt")]
    pub encryption_certificate_thumbprint: Option<Cow<'a, str>>,
}

fn owned(t: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(t.into_owned())
}

impl ChangeNotification<'_> {
    /// A copy that no longer borrows the request body (for work on other threads).
    pub fn into_owned(self) -> ChangeNotification<'static> {
        ChangeNotification {
            subscription_id: owned(self.subscription_id),
            subscription_expiration_date_time: self.subscription_expiration_date_time.map(owned),
            change_type: self.change_type,
            client_state: self.client_state,
            tenant_id: owned(self.tenant_id),
            resource: self.resource.map(owned),
            resource_data: self.resource_data.map(|r| ResourceData {
                id: r.id.map(owned),
                odata_type: r.odata_type.map(owned),
                odata_id: r.odata_id.map(owned),
            }),
            encrypted_content: self.encrypted_content.map(EncryptedContent::into_owned),
            lifecycle_event: self.lifecycle_event.map(owned),
        }
    }
}

impl EncryptedContent<'_> {
    /// A copy that no longer borrows the request body.
    pub fn into_owned(self) -> EncryptedContent<'static> {
        EncryptedContent {
            data: owned(self.data),
            data_key: owned(self.data_key),
            data_signature: owned(self.data_signature),
            encryption_certificate_id: owned(self.encryption_certificate_id),
            encryption_certificate_thumbprint: self.encryption_certificate_thumbprint.map(owned),
        }
    }
}

impl std::fmt::Debug for EncryptedContent<'_> {
    // The ciphertext is noise in logs; the certificate id is what an operator needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedContent")
            .field("encryption_certificate_id", &self.encryption_certificate_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not a JSON notification envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("JSON nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("{0} items in one request; at most {1} are accepted")]
    TooManyItems(usize, usize),
}

impl EnvelopeError {
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Json(_) => "bad_json",
            EnvelopeError::TooDeep(_) => "too_deep",
            EnvelopeError::TooManyItems(..) => "too_many_items",
        }
    }
}

/// Whether `body` nests arrays/objects deeper than `max`, by one pass over the bytes before any
/// parser recurses into it. Strings (mostly long base64) are skipped with a SIMD search.
pub fn nesting_exceeds(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr::memchr3(b'"', b'{', b'[', &body[i..]).map(|o| o + i) {
        // Closing brackets between here and the next opener or string lower the depth.
        depth = depth.saturating_sub(memchr::memchr2_iter(b'}', b']', &body[i..off]).count());
        match body[off] {
            b'"' => {
                // Jump to the closing quote, stepping over escapes.
                let mut j = off + 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[j..]) {
                        Some(k) if body[j + k] == b'\\' => j += k + 2,
                        Some(k) => {
                            j += k + 1;
                            break;
                        }
                        None => return false, // unterminated: the parser will reject it
                    }
                    if j >= body.len() {
                        return false;
                    }
                }
                i = j;
            }
            _ => {
                depth += 1;
                if depth > max {
                    return true;
                }
                i = off + 1;
            }
        }
    }
    false
}

impl<'a> Envelope<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, EnvelopeError> {
        Ok(super::from_json_bytes(body)?)
    }

    /// Parses with the request limits: nesting depth first, then the number of items.
    pub fn parse_limited(
        body: &'a [u8],
        max_depth: usize,
        max_items: usize,
    ) -> Result<Self, EnvelopeError> {
        if nesting_exceeds(body, max_depth) {
            return Err(EnvelopeError::TooDeep(max_depth));
        }
        let envelope = Self::parse(body)?;
        if envelope.value.len() > max_items {
            return Err(EnvelopeError::TooManyItems(envelope.value.len(), max_items));
        }
        Ok(envelope)
    }
}

impl<'a> ChangeNotification<'a> {
    pub fn parse(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw.get())
    }

    pub fn is_lifecycle(&self) -> bool {
        self.lifecycle_event.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_borrow_the_body_unless_escapes_force_a_copy() {
        let body = br#"{"value":[{"subscriptionId":"s1","tenantId":"t","resource":"chats('a')",
            "encryptedContent":{"data":"ab\/cd","dataKey":"k+/=","dataSignature":"sig",
            "encryptionCertificateId":"c","encryptionCertificateThumbprint":"ff"}}]}"#;
        let env = Envelope::parse(body).unwrap();
        let n = ChangeNotification::parse(env.value[0]).unwrap();
        assert!(matches!(n.subscription_id, Cow::Borrowed("s1")));
        assert!(matches!(n.resource, Some(Cow::Borrowed("chats('a')"))));
        let c = n.encrypted_content.clone().unwrap();
        assert!(matches!(c.data_key, Cow::Borrowed("k+/=")));
        assert!(matches!(
            c.encryption_certificate_thumbprint,
            Some(Cow::Borrowed("ff"))
        ));
        // JSON may escape `/` in base64: the value is unescaped into an owned string.
        assert!(matches!(c.data, Cow::Owned(ref d) if d == "ab/cd"));
        let owned = n.into_owned();
        assert_eq!(owned.encrypted_content.unwrap().data, "ab/cd");
        assert_eq!(owned.tenant_id, "t");
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(!nesting_exceeds(br#"{"value":[{"a":[1]}]}"#, 4));
        assert!(nesting_exceeds(br#"{"value":[{"a":[[1]]}]}"#, 4));
        assert!(!nesting_exceeds(br#"{"s":"[[[[[[\"[[[["}"#, 2));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(nesting_exceeds(deep.as_bytes(), 64));
    }

    /// The obvious byte-by-byte scanner, to check the fast one against.
    fn reference_depth(body: &[u8]) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in body {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn fast_scan_agrees_with_the_reference() {
        let samples: Vec<&[u8]> = vec![
            br#"{"a":"\\"}[[[]]]"#,
            br#"{"a":"\"[[["}[[]]"#,
            br#"[{"x":[1,{"y":"]]]\\"}]},[[["#,
            br#"{"s":"[[[[[[\"[[[["}"#,
            br#"]]]]{[{[]}]}"#,
            br#""unterminated [[[["#,
        ];
        let fixtures = [
            "synthetic/chat_notification.json",
            "sdk-core-channel-reply/constructed_notification_envelope.json",
        ];
        let files: Vec<Vec<u8>> = fixtures
            .iter()
            .map(|f| {
                std::fs::read(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../../tests/fixtures")
                        .join(f),
                )
                .unwrap()
            })
            .collect();
        for body in samples.into_iter().chain(files.iter().map(Vec::as_slice)) {
            let depth = reference_depth(body);
            // Unterminated strings end the fast scan early, which the parser rejects anyway.
            if body.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
                assert!(
                    !nesting_exceeds(body, depth),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
                assert!(
                    depth == 0 || nesting_exceeds(body, depth - 1),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn item_count_is_limited() {
        let body = br#"{"value":[{},{},{}]}"#;
        assert!(Envelope::parse_limited(body, 8, 3).is_ok());
        assert!(matches!(
            Envelope::parse_limited(body, 8, 2),
            Err(EnvelopeError::TooManyItems(3, 2))
        ));
    }
}
