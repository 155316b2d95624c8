//! What to read from Graph for a gap, decided without I/O: the subscription's resource says
//! which message API covers it, and overlapping gaps of one resource are merged so that each
//! message is fetched once.

use chrono::{DateTime, Utc};
use graphbridge_graph_api::messages::Window;

/// A window of one subscription's resource in which notifications may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub tenant: String,
    /// The subscription that missed them (the events' `subscription_id`).
    pub subscription_id: String,
    /// As subscribed, e.g. `/teams/getAllMessages?model=B`.
    pub resource: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One read from Graph's message APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// `GET /teams/{team}/channels/getAllMessages` (messages and replies of every channel).
    TeamChannels {
        team: String,
        window: Window,
        model: Option<String>,
    },
    /// The teams are those configured, or every team of the tenant (`GET /teams`).
    EveryTeam {
        window: Window,
        model: Option<String>,
    },
    /// `GET /users/{user}/chats/getAllMessages`.
    UserChats {
        user: String,
        window: Window,
        model: Option<String>,
    },
    /// `GET /chats/{chat}/messages`, newest first.
    Chat { chat: String, window: Window },
    /// `GET /teams/{team}/channels/{channel}/messages/delta` from the stored deltaLink; the
    /// window only filters what it returns.
    ChannelDelta {
        team: String,
        channel: String,
        window: Window,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("resource {0:?} is not a Teams message resource backfill knows")]
    Unknown(String),
    #[error("resource {0:?} covers every chat, but backfill.users is empty (Graph reads chats per user)")]
    NoUsers(String),
}

/// Strips `'…'` or `('…')` quoting Graph sometimes echoes around ids.
fn id(s: &str) -> String {
    s.trim_start_matches("('")
        .trim_end_matches("')")
        .trim_matches('\'')
        .to_string()
}

/// The reads that cover `gap`; `users` are `backfill.users`, for tenant-wide chats.
pub fn fetches(gap: &Gap, users: &[String]) -> Result<Vec<Fetch>, PlanError> {
    let window = Window {
        from: gap.from,
        to: gap.to,
    };
    let (path, query) = gap.resource.split_once('?').unwrap_or((&gap.resource, ""));
    let model = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("model="))
        .map(str::to_string);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let unknown = || PlanError::Unknown(gap.resource.clone());
    Ok(match parts[..] {
        ["teams", "getAllMessages"] => vec![Fetch::EveryTeam { window, model }],
        ["teams", team, "channels", "getAllMessages"] => vec![Fetch::TeamChannels {
            team: id(team),
            window,
            model,
        }],
        ["teams", team, "channels", channel, "messages"] => vec![Fetch::ChannelDelta {
            team: id(team),
            channel: id(channel),
            window,
        }],
        ["chats", "getAllMessages"] => {
            if users.is_empty() {
                return Err(PlanError::NoUsers(gap.resource.clone()));
            }
            users
                .iter()
                .map(|u| Fetch::UserChats {
                    user: u.clone(),
                    window,
                    model: model.clone(),
                })
                .collect()
        }
        ["users", user, "chats", "getAllMessages"] => vec![Fetch::UserChats {
            user: id(user),
            window,
            model,
        }],
        ["chats", chat, "messages"] => vec![Fetch::Chat {
            chat: id(chat),
            window,
        }],
        _ => return Err(unknown()),
    })
}

/// Merges gaps of the same tenant, subscription and resource whose windows overlap or touch;
/// the result is ordered by tenant, resource and start.
pub fn merge(mut gaps: Vec<Gap>) -> Vec<Gap> {
    gaps.sort_by(|a, b| {
        (&a.tenant, &a.resource, &a.subscription_id, a.from).cmp(&(
            &b.tenant,
            &b.resource,
            &b.subscription_id,
            b.from,
        ))
    });
    let mut out: Vec<Gap> = Vec::with_capacity(gaps.len());
    for g in gaps {
        match out.last_mut() {
            Some(last)
                if last.tenant == g.tenant
                    && last.resource == g.resource
                    && last.subscription_id == g.subscription_id
                    && g.from <= last.to =>
            {
                last.to = last.to.max(g.to);
            }
            _ => out.push(g),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 7, m, 0).unwrap()
    }

    fn gap(resource: &str, from: u32, to: u32) -> Gap {
        Gap {
            tenant: "t".into(),
            subscription_id: "s".into(),
            resource: resource.into(),
            from: t(from),
            to: t(to),
        }
    }

    #[test]
    fn each_resource_maps_to_its_message_api() {
        let w = Window {
            from: t(0),
            to: t(10),
        };
        let users = ["u1".to_string(), "u2".to_string()];
        assert_eq!(
            fetches(&gap("/teams/getAllMessages?model=B", 0, 10), &users).unwrap(),
            [Fetch::EveryTeam {
                window: w,
                model: Some("B".into())
            }]
        );
        assert_eq!(
            fetches(&gap("/chats/getAllMessages", 0, 10), &users).unwrap(),
            users
                .iter()
                .map(|u| Fetch::UserChats {
                    user: u.clone(),
                    window: w,
                    model: None
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(
            fetches(
                &gap("/teams/T1/channels/19:c@thread.tacv2/messages", 0, 10),
                &[]
            )
            .unwrap(),
            [Fetch::ChannelDelta {
                team: "T1".into(),
                channel: "19:c@thread.tacv2".into(),
                window: w
            }]
        );
        assert_eq!(
            fetches(&gap("chats/19:x@unq.gbl.spaces/messages", 0, 10), &[]).unwrap(),
            [Fetch::Chat {
                chat: "19:x@unq.gbl.spaces".into(),
                window: w
            }]
        );
        assert_eq!(
            fetches(&gap("/chats/getAllMessages", 0, 10), &[]),
            Err(PlanError::NoUsers("/chats/getAllMessages".into()))
        );
        assert!(fetches(&gap("/me/events", 0, 10), &[]).is_err());
    }

    #[test]
    fn overlapping_and_touching_gaps_merge_and_others_stay_apart() {
        let merged = merge(vec![
            gap("/chats/getAllMessages", 5, 9),
            gap("/chats/getAllMessages", 0, 5),
            gap("/chats/getAllMessages", 2, 3),
            gap("/chats/getAllMessages", 20, 30),
            gap("/teams/getAllMessages", 1, 4),
        ]);
        let spans: Vec<(&str, DateTime<Utc>, DateTime<Utc>)> = merged
            .iter()
            .map(|g| (g.resource.as_str(), g.from, g.to))
            .collect();
        assert_eq!(
            spans,
            [
                ("/chats/getAllMessages", t(0), t(9)),
                ("/chats/getAllMessages", t(20), t(30)),
                ("/teams/getAllMessages", t(1), t(4)),
            ]
        );
    }
}
