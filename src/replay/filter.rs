//! Which records a replay publishes: by tenant, team, chat and change type. Each list is an
//! "any of"; lists combine with "and". A record without the field a filter asks about (a
//! lifecycle event has no team) does not match that filter.

use super::item::Facts;
use graphbridge_core::graph::resource::Conversation;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenants: Vec<String>,
    pub teams: Vec<String>,
    pub chats: Vec<String>,
    pub change_types: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.teams.is_empty()
            && self.chats.is_empty()
            && self.change_types.is_empty()
    }

    pub fn matches(&self, f: &Facts) -> bool {
        // Tenant ids are GUIDs that Graph writes in either case.
        let any = |list: &[String], v: Option<&str>, ci: bool| {
            list.is_empty()
                || v.is_some_and(|v| {
                    list.iter().any(|x| {
                        if ci {
                            x.eq_ignore_ascii_case(v)
                        } else {
                            x == v
                        }
                    })
                })
        };
        let (team, chat) = match &f.conversation {
            Some(Conversation::Channel { team_id, .. }) => (Some(team_id.as_str()), None),
            Some(Conversation::Chat { chat_id }) => (None, Some(chat_id.as_str())),
            None => (None, None),
        };
        // A team filter and a chat filter together mean "this team's or this chat's messages".
        let conversation = if !self.teams.is_empty() && !self.chats.is_empty() {
            any(&self.teams, team, true) && team.is_some()
                || any(&self.chats, chat, false) && chat.is_some()
        } else {
            any(&self.teams, team, true) && any(&self.chats, chat, false)
        };
        any(&self.tenants, f.tenant.as_deref(), true)
            && conversation
            && any(&self.change_types, f.change_type.as_deref(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(tenant: &str, team: &str, change: &str) -> Facts {
        Facts {
            tenant: Some(tenant.into()),
            conversation: Some(Conversation::Channel {
                team_id: team.into(),
                channel_id: "19:c@thread.tacv2".into(),
            }),
            change_type: Some(change.into()),
            ..Default::default()
        }
    }

    fn chat(tenant: &str, chat: &str, change: &str) -> Facts {
        Facts {
            tenant: Some(tenant.into()),
            conversation: Some(Conversation::Chat {
                chat_id: chat.into(),
            }),
            change_type: Some(change.into()),
            ..Default::default()
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = Filter::default();
        assert!(f.matches(&channel("t", "a", "created")));
        assert!(f.matches(&Facts::default()));
    }

    #[test]
    fn each_field_filters() {
        let f = Filter {
            tenants: vec!["T1".into()],
            ..Default::default()
        };
        assert!(f.matches(&channel("t1", "a", "created")));
        assert!(!f.matches(&channel("t2", "a", "created")));
        let f = Filter {
            change_types: vec!["deleted".into(), "updated".into()],
            ..Default::default()
        };
        assert!(f.matches(&chat("t", "c", "updated")));
        assert!(!f.matches(&chat("t", "c", "created")));
        let f = Filter {
            teams: vec!["a".into()],
            ..Default::default()
        };
        assert!(f.matches(&channel("t", "a", "created")));
        assert!(!f.matches(&channel("t", "b", "created")));
        assert!(
            !f.matches(&chat("t", "a", "created")),
            "a chat is not in a team"
        );
        assert!(
            !f.matches(&Facts::default()),
            "lifecycle events have no team"
        );
    }

    #[test]
    fn team_and_chat_together_select_either() {
        let f = Filter {
            teams: vec!["a".into()],
            chats: vec!["c".into()],
            tenants: vec!["t".into()],
            ..Default::default()
        };
        assert!(f.matches(&channel("t", "a", "created")));
        assert!(f.matches(&chat("t", "c", "created")));
        assert!(!f.matches(&chat("t", "d", "created")));
        assert!(
            !f.matches(&chat("u", "c", "created")),
            "and the tenant still applies"
        );
    }
}
