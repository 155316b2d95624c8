//! Verdicts: DLP decisions about messages, applied to Graph. A DLP service reads the message
//! stream and publishes a verdict (schema/message-verdict.v1.json) to the verdict topic or
//! subject; the worker PATCHes the message's `policyViolation` with the app's credentials,
//! then publishes an audit event, and only then moves its position. Graph answers with an
//! `updated` notification carrying the policyViolation, which the bridge publishes like any
//! other, so the loop closes in the message stream.
//!
//! - `verdict`: reading and checking one record;
//! - `apply`: the PATCH, with the rate limit, Graph's `Retry-After` and backoff;
//! - `io`: the broker side (verdicts in, audit and dead letters out);
//! - `worker`: the loop; `cli`: `graphbridge verdicts run | apply`.

pub mod apply;
pub mod cli;
pub mod io;
pub mod verdict;
pub mod worker;
