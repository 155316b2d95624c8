//! The stdout sink: events as JSON Lines on stdout, dead letters on stderr. For local use and
//! for piping into other tools; "durable" here means written and flushed.

use std::io::Write;

use super::{Record, Sink, SinkError, Stream};

pub struct StdoutSink;

#[async_trait::async_trait]
impl Sink for StdoutSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        let write = |out: &mut dyn Write, dead: bool| -> std::io::Result<()> {
            for r in records
                .iter()
                .filter(|r| (r.stream == Stream::DeadLetter) == dead && r.stream != Stream::Raw)
            {
                out.write_all(&r.payload)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        };
        write(&mut std::io::stdout().lock(), false)
            .and_then(|_| write(&mut std::io::stderr().lock(), true))
            .map_err(|e| SinkError::Retryable(format!("stdout: {e}")))
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }
}
