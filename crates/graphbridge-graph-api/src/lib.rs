//! Microsoft Graph's REST side, as graphbridge calls it: OAuth2 client credentials
//! (`oauth`), the subscriptions API (`subscriptions`), the message APIs backfill reads
//! (`messages`) and the clock the callers plan with
//! (`clock`, swapped for a manual one in tests).

pub mod clock;
pub mod messages;
pub mod oauth;
pub mod subscriptions;
