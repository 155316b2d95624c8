//! On-disk framing of one spooled batch, and the scan that recovers a segment after a crash.
//!
//! ```text
//! len u32 LE | crc32 u32 LE | items u32 LE | appended_ms u64 LE | JSON (len - 12 bytes)
//! ```
//! `len` counts everything after the crc; the crc covers the same bytes. A record whose
//! header, length or crc does not check out ends the readable part of its segment: records are
//! fsynced before their batch is acknowledged, so a torn tail was never acknowledged.

/// Header bytes before the body: `len` and `crc`.
pub const HEADER: usize = 8;
/// Body bytes before the JSON: `items` and `appended_ms`.
const META: usize = 12;
/// Larger lengths are garbage, not records (a batch is at most `server.max_body_bytes`).
pub const MAX_BODY: usize = 256 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub items: u32,
    pub appended_ms: u64,
    pub json: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the record takes on disk.
    pub fn size(&self) -> usize {
        HEADER + META + self.json.len()
    }
}

pub fn encode(items: u32, appended_ms: u64, json: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEADER + META + json.len());
    body.extend_from_slice(&[0; HEADER]);
    body.extend_from_slice(&items.to_le_bytes());
    body.extend_from_slice(&appended_ms.to_le_bytes());
    body.extend_from_slice(json);
    let len = (body.len() - HEADER) as u32;
    let crc = crc32fast::hash(&body[HEADER..]);
    body[..4].copy_from_slice(&len.to_le_bytes());
    body[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    body
}

/// Decodes the record at the start of `buf`; `None` when it is incomplete or corrupt.
pub fn decode(buf: &[u8]) -> Option<Frame<'_>> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..HEADER)?.try_into().ok()?);
    if !(META..=MAX_BODY).contains(&len) {
        return None;
    }
    let body = buf.get(HEADER..HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some(Frame {
        items: u32::from_le_bytes(body[..4].try_into().ok()?),
        appended_ms: u64::from_le_bytes(body[4..META].try_into().ok()?),
        json: &body[META..],
    })
}

/// The complete records of a segment from `start`, with their offsets, and the offset where
/// the readable part ends (the segment's length when nothing is torn).
pub fn scan(buf: &[u8], start: usize) -> (Vec<(usize, Frame<'_>)>, usize) {
    let mut frames = Vec::new();
    let mut at = start.min(buf.len());
    while at < buf.len() {
        match decode(&buf[at..]) {
            Some(f) => {
                let size = f.size();
                frames.push((at, f));
                at += size;
            }
            None => break,
        }
    }
    (frames, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rec = encode(3, 1234, br#"{"a":1}"#);
        let f = decode(&rec).unwrap();
        assert_eq!(
            (f.items, f.appended_ms, f.json),
            (3, 1234, &br#"{"a":1}"#[..])
        );
        assert_eq!(f.size(), rec.len());
    }

    #[test]
    fn scan_stops_at_a_torn_or_flipped_record() {
        let mut seg = encode(1, 1, b"first");
        seg.extend(encode(2, 2, b"second"));
        let whole = seg.len();
        seg.extend(encode(3, 3, b"third"));
        // Every truncation inside the third record keeps exactly the first two.
        for cut in whole..seg.len() {
            let (frames, end) = scan(&seg[..cut], 0);
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(end, whole);
        }
        // A flipped bit in the third record's body is caught by the crc.
        let last = seg.len() - 1;
        seg[last] ^= 1;
        let (frames, end) = scan(&seg, 0);
        assert_eq!((frames.len(), end), (2, whole));
    }

    #[test]
    fn garbage_lengths_are_not_records() {
        assert_eq!(decode(&[0xff; 64]), None);
        assert_eq!(decode(&[0; 64]), None);
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
