//! [`BodyText`]: the strings of a parsed notification, which can outlive the borrow of the
//! request body without being copied.

use std::borrow::Cow;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text parsed from the request body that can outlive the borrow without being copied: a
/// `Cow` while parsing; for work on other threads, a slice of the body's own buffer (`Bytes`,
/// reference-counted) when it still borrows from that body. Copying the items' strings for the
/// crypto workers cost the reactor more than the bytes suggest: a dozen allocations per item,
/// each freed by a worker and collected back by the allocator (docs/performance.md).
#[derive(Clone)]
pub enum BodyText<'a> {
    Parsed(Cow<'a, str>),
    Shared(SharedStr),
}

/// A slice of a request body that was a `&str` (built only by [`BodyText::detach`]). Checked
/// as UTF-8 once, when cut on the reactor (under 0.1 µs per item): the workers read each
/// string several times (base64, HMAC, key selection, the event), and checking on every read
/// repeated that work each time.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedStr(ByteString);

impl BodyText<'_> {
    /// The same text, no longer borrowing: a slice of `body` when the text lies inside it,
    /// else an owned copy (JSON escapes, or a body not held in `Bytes`).
    pub fn detach(self, body: &Bytes) -> BodyText<'static> {
        match self {
            BodyText::Parsed(Cow::Borrowed(s)) if contains(body, s.as_bytes()) => {
                // Always UTF-8 (the slice holds exactly the bytes of `s`); a copy otherwise.
                match ByteString::try_from(body.slice_ref(s.as_bytes())) {
                    Ok(shared) => BodyText::Shared(SharedStr(shared)),
                    Err(_) => BodyText::Parsed(Cow::Owned(s.to_owned())),
                }
            }
            BodyText::Parsed(text) => BodyText::Parsed(Cow::Owned(text.into_owned())),
            BodyText::Shared(shared) => BodyText::Shared(shared),
        }
    }
}

/// Whether `part` lies inside `body`'s buffer (what `Bytes::slice_ref` requires).
fn contains(body: &Bytes, part: &[u8]) -> bool {
    let start = body.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= start + body.len()
}

impl Deref for BodyText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            BodyText::Parsed(text) => text,
            BodyText::Shared(SharedStr(text)) => text,
        }
    }
}

impl std::fmt::Debug for BodyText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for BodyText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// Equal when the text is, however it is held.
impl PartialEq for BodyText<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for BodyText<'_> {}

impl PartialEq<str> for BodyText<'_> {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for BodyText<'_> {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl From<String> for BodyText<'_> {
    fn from(text: String) -> Self {
        BodyText::Parsed(Cow::Owned(text))
    }
}

impl<'a> From<&'a str> for BodyText<'a> {
    fn from(text: &'a str) -> Self {
        BodyText::Parsed(Cow::Borrowed(text))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BodyText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
        Ok(BodyText::Parsed(Borrowed::deserialize(d)?.0))
    }
}

impl Serialize for BodyText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}
