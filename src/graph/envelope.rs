//! Graph's delivery body: `{"value":[changeNotification…], "validationTokens":[JWT…]}`.
//!
//! The batch is parsed in two steps: the envelope keeps each item as raw JSON, then each item
//! is parsed on its own, so one malformed item is rejected alone instead of failing its batch,
//! and the raw bytes stay available for the dead-letter stream and the raw archive.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Secret;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub value: Vec<Box<RawValue>>,
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
}

/// One `changeNotification`. Lifecycle notifications share the type and carry `lifecycleEvent`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification {
    pub subscription_id: String,
    #[serde(default)]
    pub subscription_expiration_date_time: Option<String>,
    #[serde(default)]
    pub change_type: Option<ChangeType>,
    /// Echo of the subscription's secret; compared in constant time, never logged.
    #[serde(default)]
    pub client_state: Option<Secret>,
    pub tenant_id: String,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_data: Option<ResourceData>,
    #[serde(default)]
    pub encrypted_content: Option<EncryptedContent>,
    #[serde(default)]
    pub lifecycle_event: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResourceData {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    #[serde(rename = "@odata.id", default)]
    pub odata_id: Option<String>,
}

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent {
    pub data: String,
    pub data_key: String,
    pub data_signature: String,
    pub encryption_certificate_id: String,
    #[serde(default)]
    pub encryption_certificate_thumbprint: Option<String>,
}

impl std::fmt::Debug for EncryptedContent {
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

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(super::from_json_bytes(body)?)
    }

    /// Parses with the request limits: nesting depth first, then the number of items.
    pub fn parse_limited(
        body: &[u8],
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

impl ChangeNotification {
    pub fn parse(raw: &RawValue) -> Result<Self, serde_json::Error> {
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
                        .join("tests/fixtures")
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
