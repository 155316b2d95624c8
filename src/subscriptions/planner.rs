//! What a reconcile round does for one tenant, decided without I/O: [`plan`] takes the desired
//! subscriptions, what Graph lists and what the controller remembers, and the time, and returns
//! the steps; the controller carries them out with the Graph client. The timing rules (renew
//! margin and jitter) are pure functions here too.
//!
//! Renewal and reauthorization are one `PATCH` with a new expiration, which Graph documents as
//! doing both. The controller never calls `/reauthorize`, so Graph's one timing rule, no
//! `/reauthorize` and `PATCH` of one subscription within 10 minutes, cannot be broken and a
//! `PATCH` is never held back for it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::desired::Desired;
use graphbridge_graph_api::subscriptions::Subscription;

/// What the controller remembers of a subscription it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub id: String,
    pub expires_at: DateTime<Utc>,
    pub renew_at: DateTime<Utc>,
    /// Last time Graph showed it alive (list, create, renew).
    pub confirmed_at: DateTime<Utc>,
}

/// When to renew: a margin before expiry (at most half the lifetime), plus a share of the
/// jitter (at most half the margin) so that many subscriptions do not renew at once.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub renew_margin: Duration,
    pub jitter: Duration,
}

impl Timing {
    /// Renew margin for one subscription: at most half its lifetime.
    pub fn margin(&self, d: &Desired) -> Duration {
        self.renew_margin.min(d.lifetime / 2)
    }

    /// The renewal time of `d` expiring at `expires_at`; `roll` in [0, 1) picks the jitter.
    pub fn renew_at(&self, d: &Desired, expires_at: DateTime<Utc>, roll: f64) -> DateTime<Utc> {
        let margin = self.margin(d);
        let jitter = self.jitter.min(margin / 2).mul_f64(roll.clamp(0.0, 1.0));
        expires_at - chrono_duration(margin + jitter)
    }
}

pub fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `s` as remembered after Graph showed it alive at `now`; `fresh_renew_at` applies unless the
/// same subscription with the same expiry was remembered already (its jittered time is kept
/// rather than re-rolled every round).
pub fn tracked(
    prev: Option<&Tracked>,
    s: &Subscription,
    now: DateTime<Utc>,
    fresh_renew_at: DateTime<Utc>,
) -> Tracked {
    let prev = prev.filter(|p| p.id == s.id);
    Tracked {
        id: s.id.clone(),
        expires_at: s.expiration_date_time,
        renew_at: prev
            .filter(|p| p.expires_at == s.expiration_date_time)
            .map_or(fresh_renew_at, |p| p.renew_at),
        confirmed_at: now,
    }
}

/// What the controller knows besides the desired state: what Graph lists (`'l`, which steps
/// may name) and what the controller remembers (`'k`, which they copy).
pub struct Observed<'l, 'k> {
    /// The app's subscriptions in the tenant, as Graph lists them.
    pub listed: &'l [Subscription],
    /// What the controller remembers, by item name.
    pub tracked: &'k HashMap<String, Tracked>,
    /// Earliest next attempt of items whose last action failed.
    pub retry_at: &'k HashMap<String, DateTime<Utc>>,
    pub timing: Timing,
    /// Draws a share in [0, 1) of the jitter, once for each renewal time set, so that
    /// subscriptions first seen in the same round do not all renew at the same moment.
    pub roll: fn() -> f64,
}

/// One step of a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// Graph lists it as desired: remember it as `tracked`, and renew it when `renew` (due, or
    /// the item names another certificate than Graph holds: key rotation).
    Keep {
        desired: &'a Desired,
        tracked: Tracked,
        renew: bool,
    },
    /// Change types or lifecycle URL differ, which a PATCH cannot change: delete, create anew.
    Replace {
        desired: &'a Desired,
        old: &'a Subscription,
    },
    /// Not on Graph: create it. `vanished` is the one remembered that is gone without our
    /// doing (expired, removed): notifications since it was last seen alive may be lost.
    Create {
        desired: &'a Desired,
        vanished: Option<Tracked>,
    },
    /// Ours (one of our notification URLs) but not desired any more.
    Delete { subscription: &'a Subscription },
}

/// The steps of one round over one tenant's `desired` subscriptions, in order: each desired
/// one ([`plan_item`]), then the deletions ([`deletions`]). The controller asks for them one at
/// a time instead, each desired item with the time it is reached, as the round's Graph calls
/// take time (a lot of it under the tests' fast clock).
pub fn plan<'a>(desired: &'a [Desired], o: &Observed<'a, '_>, now: DateTime<Utc>) -> Vec<Step<'a>> {
    let mut steps: Vec<Step<'a>> = desired
        .iter()
        .filter_map(|d| plan_item(d, o, now))
        .collect();
    steps.extend(deletions(desired, o.listed));
    steps
}

/// The step for one desired subscription: keep (and maybe renew) what Graph lists for it,
/// replace what a PATCH cannot fix, create what is missing. `None`: a create or replace that
/// failed waits for its retry time (a renewal does not).
pub fn plan_item<'a>(d: &'a Desired, o: &Observed<'a, '_>, now: DateTime<Utc>) -> Option<Step<'a>> {
    let found = o.listed.iter().find(|s| d.matches(s));
    let needs_create = !found.is_some_and(|s| d.compatible(s));
    if needs_create && o.retry_at.get(&d.name).is_some_and(|t| now < *t) {
        return None;
    }
    Some(match found {
        Some(s) if d.compatible(s) => keep(d, s, o, now),
        Some(old) => Step::Replace { desired: d, old },
        None => Step::Create {
            desired: d,
            vanished: o.tracked.get(&d.name).cloned(),
        },
    })
}

/// Subscriptions of ours (one of the tenant's notification URLs) that no desired item claims:
/// each item claims the first one Graph lists for it, even while it waits for a retry. A
/// duplicate of a claimed one is deleted too.
pub fn deletions<'a>(desired: &[Desired], listed: &'a [Subscription]) -> Vec<Step<'a>> {
    let claimed: HashSet<&str> = desired
        .iter()
        .filter_map(|d| listed.iter().find(|s| d.matches(s)))
        .map(|s| s.id.as_str())
        .collect();
    let ours: HashSet<&str> = desired
        .iter()
        .map(|d| d.notification_url.as_str())
        .collect();
    listed
        .iter()
        .filter(|s| ours.contains(s.notification_url.as_str()) && !claimed.contains(s.id.as_str()))
        .map(|subscription| Step::Delete { subscription })
        .collect()
}

fn keep<'a>(
    d: &'a Desired,
    s: &Subscription,
    o: &Observed<'_, '_>,
    now: DateTime<Utc>,
) -> Step<'a> {
    let fresh = o.timing.renew_at(d, s.expiration_date_time, (o.roll)());
    let tracked = tracked(o.tracked.get(&d.name), s, now, fresh);
    // Key rotation: the item names another certificate than Graph holds.
    let cert_changed = d.encryption.as_ref().is_some_and(|e| {
        s.encryption_certificate_id
            .as_deref()
            .is_some_and(|id| id != e.certificate_id)
    });
    let renew = tracked.renew_at <= now || cert_changed;
    Step::Keep {
        desired: d,
        tracked,
        renew,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::desired::Encryption;
    use chrono::TimeZone;

    const URL: &str = "https://bridge.example.com/notifications";
    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    fn minutes(m: i64) -> chrono::Duration {
        chrono::Duration::minutes(m)
    }

    fn desired(name: &str, resource: &str) -> Desired {
        Desired {
            name: name.into(),
            tenant_id: "tenant".into(),
            resource: resource.into(),
            change_type: "created,updated,deleted".into(),
            notification_url: URL.into(),
            lifecycle_url: Some("https://bridge.example.com/lifecycle".into()),
            encryption: Some(Encryption {
                certificate_id: "key-2".into(),
                certificate: "MIIB".into(),
            }),
            client_state: "state".into(),
            lifetime: 72 * HOUR,
        }
    }

    /// What Graph lists for `d`, expiring at `expires`, encrypted to `cert_id`.
    fn listed(id: &str, d: &Desired, expires: DateTime<Utc>, cert_id: &str) -> Subscription {
        Subscription {
            id: id.into(),
            expiration_date_time: expires,
            encryption_certificate_id: Some(cert_id.into()),
            ..d.to_subscription(t0())
        }
    }

    fn timing() -> Timing {
        Timing {
            renew_margin: 6 * HOUR,
            jitter: 20 * 60 * Duration::from_secs(1),
        }
    }

    fn observed<'a>(
        listed: &'a [Subscription],
        tracked: &'a HashMap<String, Tracked>,
        retry_at: &'a HashMap<String, DateTime<Utc>>,
    ) -> Observed<'a, 'a> {
        Observed {
            listed,
            tracked,
            retry_at,
            timing: timing(),
            roll: || 0.0,
        }
    }

    fn renew_of(steps: &[Step<'_>]) -> Vec<bool> {
        steps
            .iter()
            .map(|s| match s {
                Step::Keep { renew, .. } => *renew,
                other => panic!("expected Keep, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_subscription_is_renewed_inside_the_margin_and_not_before() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let expires = t0() + minutes(6 * 60 + 1);
        let subs = [listed("s1", &d[0], expires, "key-2")];
        let o = observed(&subs, &tracked, &retry);
        assert_eq!(renew_of(&plan(&d, &o, t0())), [false], "a minute outside");
        assert_eq!(
            renew_of(&plan(&d, &o, t0() + minutes(1))),
            [true],
            "at the margin"
        );
    }

    #[test]
    fn the_margin_is_at_most_half_the_lifetime_and_jitter_comes_before_it() {
        let mut d = desired("short", "/chats/getAllMessages");
        d.lifetime = 2 * HOUR;
        let expires = t0() + minutes(120);
        assert_eq!(timing().renew_at(&d, expires, 0.0), expires - minutes(60));
        // Jitter comes before the margin, at most half of it: all 20 configured minutes fit.
        assert_eq!(timing().renew_at(&d, expires, 0.5), expires - minutes(70));
        let long = desired("long", "/teams/getAllMessages");
        let e = t0() + minutes(72 * 60);
        assert_eq!(timing().renew_at(&long, e, 0.0), e - minutes(6 * 60));
    }

    #[test]
    fn a_remembered_renewal_time_is_kept_until_the_expiry_changes() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let expires = t0() + minutes(24 * 60);
        let subs = [listed("s1", &d[0], expires, "key-2")];
        let earlier = Tracked {
            id: "s1".into(),
            expires_at: expires,
            renew_at: t0() - minutes(1), // rolled earlier in another round: due now
            confirmed_at: t0() - minutes(60),
        };
        let tracked = HashMap::from([("chats".to_string(), earlier.clone())]);
        let retry = HashMap::new();
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        let Step::Keep {
            tracked: t, renew, ..
        } = &steps[0]
        else {
            panic!("{steps:?}")
        };
        assert!(renew);
        assert_eq!((t.renew_at, t.confirmed_at), (earlier.renew_at, t0()));
    }

    #[test]
    fn a_new_certificate_renews_at_once() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let subs = [listed("s1", &d[0], t0() + minutes(48 * 60), "key-1")];
        assert_eq!(
            renew_of(&plan(&d, &observed(&subs, &tracked, &retry), t0())),
            [true]
        );
    }

    #[test]
    fn a_list_keeps_what_was_remembered_of_the_same_subscription() {
        let d = desired("chats", "/chats/getAllMessages");
        let s = listed("s1", &d, t0() + minutes(60), "key-2");
        let patched = tracked(None, &s, t0(), t0());
        let later = t0() + minutes(30);
        // The jittered renewal time rolled before is kept, not rolled again.
        let seen = tracked(Some(&patched), &s, later, later);
        assert_eq!((seen.renew_at, seen.confirmed_at), (t0(), later));
        // Another subscription under the same name starts afresh.
        let other = Subscription {
            id: "s2".into(),
            ..s
        };
        let fresh = tracked(Some(&patched), &other, later, later);
        assert_eq!(fresh.renew_at, later);
    }

    #[test]
    fn what_cannot_be_patched_is_replaced_and_what_is_missing_is_created() {
        let d = [
            desired("chats", "/chats/getAllMessages"),
            desired("teams", "/teams/getAllMessages"),
        ];
        let mut changed = listed("old", &d[0], t0() + minutes(600), "key-2");
        changed.change_type = "created".into();
        let subs = [changed.clone()];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        assert_eq!(
            steps,
            [
                Step::Replace {
                    desired: &d[0],
                    old: &subs[0]
                },
                Step::Create {
                    desired: &d[1],
                    vanished: None
                },
            ]
        );
    }

    #[test]
    fn a_remembered_subscription_graph_no_longer_lists_is_recreated_as_vanished() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let gone = Tracked {
            id: "s1".into(),
            expires_at: t0() + minutes(600),
            renew_at: t0() + minutes(300),
            confirmed_at: t0() - minutes(15),
        };
        let tracked = HashMap::from([("chats".to_string(), gone.clone())]);
        let retry = HashMap::new();
        let steps = plan(&d, &observed(&[], &tracked, &retry), t0());
        assert_eq!(
            steps,
            [Step::Create {
                desired: &d[0],
                vanished: Some(gone)
            }]
        );
    }

    #[test]
    fn an_existing_subscription_is_adopted_not_duplicated() {
        // Created by another replica or an earlier run: Graph lists it, nothing remembered.
        let d = [desired("chats", "/chats/getAllMessages")];
        let subs = [listed("theirs", &d[0], t0() + minutes(48 * 60), "key-2")];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        let [Step::Keep { tracked, renew, .. }] = &steps[..] else {
            panic!("{steps:?}")
        };
        assert_eq!((tracked.id.as_str(), *renew), ("theirs", false));
    }

    #[test]
    fn a_failed_create_waits_for_its_retry_time_but_renewals_do_not() {
        let d = [
            desired("chats", "/chats/getAllMessages"),
            desired("teams", "/teams/getAllMessages"),
        ];
        let subs = [listed("s1", &d[1], t0() + minutes(60), "key-2")];
        let tracked = HashMap::new();
        let retry = HashMap::from([
            ("chats".to_string(), t0() + minutes(1)),
            ("teams".to_string(), t0() + minutes(1)),
        ]);
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        assert!(
            matches!(&steps[..], [Step::Keep { renew: true, .. }]),
            "{steps:?}"
        );
        let later = plan(&d, &observed(&subs, &tracked, &retry), t0() + minutes(1));
        assert!(matches!(later[0], Step::Create { .. }), "{later:?}");
    }

    #[test]
    fn ours_but_no_longer_desired_is_deleted_and_others_are_left_alone() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let kept = listed("s1", &d[0], t0() + minutes(48 * 60), "key-2");
        let dropped = listed(
            "s2",
            &desired("old", "/teams/getAllMessages"),
            t0() + minutes(60),
            "key-2",
        );
        let mut foreign = dropped.clone();
        foreign.id = "s3".into();
        foreign.notification_url = "https://someone-else.example.com/hook".into();
        let subs = [kept, dropped, foreign];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(
            steps[1],
            Step::Delete {
                subscription: &subs[1]
            }
        );
    }

    #[test]
    fn a_replace_that_failed_waits_for_its_retry_time_and_the_old_one_is_not_deleted_meanwhile() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let mut changed = listed("old", &d[0], t0() + minutes(600), "key-2");
        changed.lifecycle_notification_url = None;
        let subs = [changed];
        let tracked = HashMap::new();
        let retry = HashMap::from([("chats".to_string(), t0() + minutes(1))]);
        assert_eq!(plan(&d, &observed(&subs, &tracked, &retry), t0()), []);
        assert_eq!(
            plan(&d, &observed(&subs, &tracked, &retry), t0() + minutes(1)),
            [Step::Replace {
                desired: &d[0],
                old: &subs[0]
            }]
        );
    }

    #[test]
    fn a_changed_lifecycle_url_is_replaced_but_change_types_in_another_order_are_kept() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let mut reordered = listed("s1", &d[0], t0() + minutes(48 * 60), "key-2");
        reordered.change_type = "Deleted, created,updated".into();
        let mut other_lifecycle = reordered.clone();
        other_lifecycle.lifecycle_notification_url = Some("https://old.example.com/lc".into());
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let subs = [reordered];
        assert_eq!(
            renew_of(&plan(&d, &observed(&subs, &tracked, &retry), t0())),
            [false]
        );
        let subs = [other_lifecycle];
        assert_eq!(
            plan(&d, &observed(&subs, &tracked, &retry), t0()),
            [Step::Replace {
                desired: &d[0],
                old: &subs[0]
            }]
        );
    }

    #[test]
    fn without_resource_data_another_certificate_does_not_renew() {
        let mut d = desired("chats", "/chats/getAllMessages");
        d.encryption = None;
        let d = [d];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let subs = [listed("s1", &d[0], t0() + minutes(48 * 60), "key-1")];
        assert_eq!(
            renew_of(&plan(&d, &observed(&subs, &tracked, &retry), t0())),
            [false]
        );
    }

    #[test]
    fn a_duplicate_of_a_kept_subscription_is_deleted() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let subs = [
            listed("first", &d[0], t0() + minutes(48 * 60), "key-2"),
            listed("second", &d[0], t0() + minutes(48 * 60), "key-2"),
        ];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        let [Step::Keep { tracked, .. }, Step::Delete { subscription }] = &steps[..] else {
            panic!("{steps:?}")
        };
        assert_eq!(
            (tracked.id.as_str(), subscription.id.as_str()),
            ("first", "second")
        );
    }

    #[test]
    fn another_subscription_under_a_remembered_name_starts_afresh() {
        // Ours was replaced by another replica: this one is not reported as vanished.
        let d = [desired("chats", "/chats/getAllMessages")];
        let expires = t0() + minutes(48 * 60);
        let ours = Tracked {
            id: "s1".into(),
            expires_at: expires,
            renew_at: t0() + minutes(60),
            confirmed_at: t0() - minutes(5),
        };
        let tracked = HashMap::from([("chats".to_string(), ours)]);
        let retry = HashMap::new();
        let subs = [listed("s2", &d[0], expires, "key-2")];
        let steps = plan(&d, &observed(&subs, &tracked, &retry), t0());
        let [Step::Keep { tracked: t, .. }] = &steps[..] else {
            panic!("{steps:?}")
        };
        assert_eq!(
            (t.id.as_str(), t.renew_at),
            ("s2", expires - minutes(6 * 60))
        );
    }

    #[test]
    fn each_item_draws_its_own_jitter() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static DRAWS: AtomicU32 = AtomicU32::new(0);
        fn alternate() -> f64 {
            f64::from(DRAWS.fetch_add(1, Ordering::Relaxed) % 2) * 0.5
        }
        let d = [
            desired("chats", "/chats/getAllMessages"),
            desired("teams", "/teams/getAllMessages"),
        ];
        let expires = t0() + minutes(48 * 60);
        let subs = [
            listed("s1", &d[0], expires, "key-2"),
            listed("s2", &d[1], expires, "key-2"),
        ];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let o = Observed {
            roll: alternate,
            ..observed(&subs, &tracked, &retry)
        };
        let renew_at: Vec<_> = plan(&d, &o, t0())
            .into_iter()
            .map(|s| match s {
                Step::Keep { tracked, .. } => tracked.renew_at,
                other => panic!("{other:?}"),
            })
            .collect();
        // 20 minutes of jitter: one draws none, the other half of it.
        let at = expires - minutes(6 * 60);
        assert_eq!(renew_at, [at, at - minutes(10)]);
    }

    #[test]
    fn the_same_resource_at_another_url_is_not_adopted() {
        let d = [desired("chats", "/chats/getAllMessages")];
        let mut elsewhere = listed("theirs", &d[0], t0() + minutes(48 * 60), "key-2");
        elsewhere.notification_url = "https://other.example.com/notifications".into();
        let subs = [elsewhere];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        assert_eq!(
            plan(&d, &observed(&subs, &tracked, &retry), t0()),
            [Step::Create {
                desired: &d[0],
                vanished: None
            }]
        );
    }

    #[test]
    fn plan_is_each_item_then_the_deletions() {
        let d = [
            desired("chats", "/chats/getAllMessages"),
            desired("teams", "/teams/getAllMessages"),
        ];
        let gone = listed("gone", &desired("x", "/chats/c1/messages"), t0(), "key-2");
        let subs = [listed("s1", &d[1], t0() + minutes(60), "key-2"), gone];
        let (tracked, retry) = (HashMap::new(), HashMap::new());
        let o = observed(&subs, &tracked, &retry);
        let mut by_parts: Vec<Step<'_>> = d.iter().filter_map(|d| plan_item(d, &o, t0())).collect();
        by_parts.extend(deletions(&d, &subs));
        assert_eq!(plan(&d, &o, t0()), by_parts);
        assert!(matches!(
            by_parts[..],
            [
                Step::Create { .. },
                Step::Keep { renew: true, .. },
                Step::Delete { .. }
            ]
        ));
    }
}
