//! Graph's delivery body: `{"value":[changeNotification…], "validationTokens":[JWT…]}`.
//!
//! The batch is parsed in two steps: the envelope keeps each item as raw JSON, then each item
//! is parsed on its own, so one malformed item is rejected alone instead of failing its batch,
//! and the raw bytes stay available for the dead-letter stream and the raw archive.
//!
//! Both steps borrow from the request body: the items are slices of it and their strings
//! (the kilobytes of base64 above all) are not copied unless JSON escapes force it. Items handed
//! to other threads keep sharing the body's buffer for those kilobytes ([`BodyText`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use super::text::BodyText;
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

/// One `changeNotification`. Lifecycle notifications share the type and carry `lifecycleEvent`.
/// Strings are [`BodyText`]: borrowed from the body, owned when JSON escapes forced a copy
/// (or when built here), slices of the body's buffer once detached for other threads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification<'a> {
    #[serde(borrow)]
    pub subscription_id: BodyText<'a>,
    #[serde(default, borrow)]
    pub subscription_expiration_date_time: Option<BodyText<'a>>,
    #[serde(default)]
    pub change_type: Option<ChangeType>,
    /// Echo of the subscription's secret; compared in constant time, never logged.
    #[serde(default)]
    pub client_state: Option<Secret>,
    #[serde(borrow)]
    pub tenant_id: BodyText<'a>,
    #[serde(default, borrow)]
    pub resource: Option<BodyText<'a>>,
    #[serde(default, borrow)]
    pub resource_data: Option<ResourceData<'a>>,
    #[serde(default, borrow)]
    pub encrypted_content: Option<EncryptedContent<'a>>,
    #[serde(default, borrow)]
    pub lifecycle_event: Option<BodyText<'a>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResourceData<'a> {
    #[serde(default, borrow)]
    pub id: Option<BodyText<'a>>,
    #[serde(rename = "@odata.type", default, borrow)]
    pub odata_type: Option<BodyText<'a>>,
    #[serde(rename = "@odata.id", default, borrow)]
    pub odata_id: Option<BodyText<'a>>,
}

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent<'a> {
    #[serde(borrow)]
    pub data: BodyText<'a>,
    #[serde(borrow)]
    pub data_key: BodyText<'a>,
    #[serde(borrow)]
    pub data_signature: BodyText<'a>,
    #[serde(borrow)]
    pub encryption_certificate_id: BodyText<'a>,
    #[serde(default, borrow)]
    pub encryption_certificate_thumbprint: Option<BodyText<'a>>,
}

impl ChangeNotification<'_> {
    /// The same item, no longer borrowing the request body (for work on other threads): its
    /// strings are slices of `body`'s buffer when they lie inside it, else copies.
    pub fn detach(self, body: &Bytes) -> ChangeNotification<'static> {
        let text = |t: BodyText<'_>| t.detach(body);
        ChangeNotification {
            subscription_id: text(self.subscription_id),
            subscription_expiration_date_time: self.subscription_expiration_date_time.map(text),
            change_type: self.change_type,
            client_state: self.client_state,
            tenant_id: text(self.tenant_id),
            resource: self.resource.map(text),
            resource_data: self.resource_data.map(|r| ResourceData {
                id: r.id.map(text),
                odata_type: r.odata_type.map(text),
                odata_id: r.odata_id.map(text),
            }),
            encrypted_content: self.encrypted_content.map(|c| c.detach(body)),
            lifecycle_event: self.lifecycle_event.map(text),
        }
    }
}

impl EncryptedContent<'_> {
    /// The same content, no longer borrowing the request body (see [`BodyText::detach`]).
    pub fn detach(self, body: &Bytes) -> EncryptedContent<'static> {
        let text = |t: BodyText<'_>| t.detach(body);
        EncryptedContent {
            data: text(self.data),
            data_key: text(self.data_key),
            data_signature: text(self.data_signature),
            encryption_certificate_id: text(self.encryption_certificate_id),
            encryption_certificate_thumbprint: self.encryption_certificate_thumbprint.map(text),
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
    use std::borrow::Cow;

    use super::*;

    /// Whether `text` is a borrowed slice of `body`.
    fn borrows(text: &BodyText<'_>, body: &[u8]) -> bool {
        matches!(text, BodyText::Parsed(Cow::Borrowed(t)) if body.as_ptr_range().contains(&t.as_ptr()))
    }

    #[test]
    fn items_borrow_the_body_unless_escapes_force_a_copy() {
        let body = Bytes::from_static(
            br#"{"value":[{"subscriptionId":"s1","tenantId":"t","resource":"chats('a')",
            "encryptedContent":{"data":"ab\/cd","dataKey":"k+/=","dataSignature":"sig",
            "encryptionCertificateId":"c","encryptionCertificateThumbprint":"ff"}}]}"#,
        );
        let env = Envelope::parse(&body).unwrap();
        let n = ChangeNotification::parse(env.value[0]).unwrap();
        assert!(borrows(&n.subscription_id, &body) && n.subscription_id == "s1");
        assert!(borrows(n.resource.as_ref().unwrap(), &body));
        let c = n.encrypted_content.clone().unwrap();
        assert!(borrows(&c.data_key, &body) && c.data_key == "k+/=");
        assert!(borrows(
            c.encryption_certificate_thumbprint.as_ref().unwrap(),
            &body
        ));
        // JSON may escape `/` in base64: the value is unescaped into an owned string, which
        // then moves to other threads as it is.
        assert!(matches!(c.data, BodyText::Parsed(Cow::Owned(ref d)) if d == "ab/cd"));
        let detached = n.detach(&body);
        let c = detached.encrypted_content.unwrap();
        assert!(matches!(c.data, BodyText::Parsed(Cow::Owned(ref d)) if d == "ab/cd"));
        assert!(matches!(c.data_key, BodyText::Shared(_)) && c.data_key == "k+/=");
        assert!(matches!(detached.tenant_id, BodyText::Shared(_)) && detached.tenant_id == "t");
    }

    #[test]
    fn detached_items_share_the_body_they_lie_in_and_are_copied_otherwise() {
        let body = Bytes::from(
            br#"{"value":[{"subscriptionId":"s1","tenantId":"t","encryptedContent":{
            "data":"QUJD","dataKey":"k","dataSignature":"sig","encryptionCertificateId":"c"}}]}"#
                .to_vec(),
        );
        let env = Envelope::parse(&body).unwrap();
        let n = ChangeNotification::parse(env.value[0]).unwrap();
        let in_body = n.encrypted_content.as_ref().unwrap().data.as_ptr();

        let shared = n.clone().detach(&body);
        let data = shared.encrypted_content.as_ref().unwrap().data.clone();
        assert!(matches!(data, BodyText::Shared(_)));
        assert_eq!((&*data, data.as_ptr()), ("QUJD", in_body), "no copy");
        assert!(matches!(shared.subscription_id, BodyText::Shared(_)));

        // The same item against a buffer it is not in: copied, not cut from the wrong buffer.
        let elsewhere = Bytes::from(body.to_vec());
        let copied = n.detach(&elsewhere);
        let data = copied.encrypted_content.as_ref().unwrap().data.clone();
        assert!(matches!(data, BodyText::Parsed(Cow::Owned(_))));
        assert!(matches!(copied.tenant_id, BodyText::Parsed(Cow::Owned(_))));
        assert_eq!(&*data, "QUJD");
        assert_eq!(
            shared.encrypted_content, copied.encrypted_content,
            "equal however held"
        );
        // Either way the item serializes as it was received.
        assert_eq!(
            serde_json::to_value(&shared).unwrap(),
            serde_json::to_value(&copied).unwrap()
        );
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
