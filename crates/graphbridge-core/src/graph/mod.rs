//! Microsoft Graph's wire formats and the checks on them. No I/O here.

pub mod envelope;
pub mod message;
pub mod resource;
pub mod text;

/// Parses JSON bytes. serde_json parses a `&str` markedly faster than bytes: it then checks
/// UTF-8 once for the whole input instead of once per string. Bytes that are not UTF-8 go
/// through the byte parser, for the same precise error as before.
pub fn from_json_bytes<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// A JSON error without the offending value: serde's messages quote input values, which may be
/// secrets or message content and must not reach logs or dead letters.
pub fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "wrong or missing field",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_errors_do_not_quote_values() {
        let e = serde_json::from_str::<super::message::ChatMessage>(
            r#"{"id": "1", "subject": 42, "body": "s3cret"}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("42") || e.to_string().contains("s3cret"),
            "serde quotes values"
        );
        let safe = super::json_error(&e);
        assert!(!safe.contains("42") && !safe.contains("s3cret"), "{safe}");
    }
}
