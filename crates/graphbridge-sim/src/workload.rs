//! A realistic stream of Teams activity: channel messages and replies, 1:1 and group chats,
//! HTML with mentions, attachments, reactions and multi-byte text, edits and deletes, spread
//! over tenants, teams and chats, plus a chosen fraction of bad items of each kind. Every item
//! knows what the bridge must do with it, so the run can be verified exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::generate::{tamper, MessageSpec};
use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_event::event_id;

/// What the bridge must do with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Publish an event with this id.
    Event(String),
    /// Dead-letter it with this reason; the id is the event it must never become.
    Rejected(&'static str, String),
}

/// Kinds of bad item the simulator can send.
pub const BAD_KINDS: [&str; 3] = ["client_state", "signature_mismatch", "unknown_certificate"];

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub tenants: usize,
    pub teams: usize,
    pub chats: usize,
    /// Fraction of items (0..=1) that are bad, spread evenly over [`BAD_KINDS`].
    pub bad_fraction: f64,
    pub seed: u64,
    pub subscription_id: String,
    pub client_state: String,
    /// Reuse one wrapped key for every item: measures the pipeline without RSA cost (the
    /// bridge's unwrapped-key cache answers); Graph itself uses a fresh key per notification.
    pub reuse_key: bool,
    /// Fraction of new messages (0..=1) whose text carries a payment card number from
    /// [`TEST_CARDS`]: what a DLP service should flag.
    pub sensitive_fraction: f64,
}

/// Well-known test card numbers (they pass the Luhn check, no bank issues them), as people
/// paste them: with spaces, dashes, or none.
pub const TEST_CARDS: [&str; 3] = [
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "378282246310005",
];

/// One notification item, ready to send, and what must come of it.
pub struct Item {
    /// The chatMessage as Graph holds it (its message APIs return it), for good items.
    pub message: Option<Value>,
    pub json: Value,
    pub expect: Expect,
    pub tenant_id: String,
}

pub struct Workload {
    cfg: WorkloadConfig,
    rng: StdRng,
    recipient: Recipient,
    /// Monotonic clock in epoch milliseconds: message ids and etags are unique by construction.
    clock: i64,
    /// Messages that exist, per conversation, for replies, edits and deletes.
    existing: Vec<MessageSpec>,
    fixed_key: Option<(zeroize::Zeroizing<[u8; 32]>, String)>,
}

const WORDS: &[&str] = &[
    "release",
    "deploy",
    "review",
    "lunch",
    "incident",
    "résumé",
    "naïve",
    "straße",
    "日本語",
    "テスト",
    "emoji 🎉",
    "Привет",
    "café",
    "ok",
    "thanks",
    "tomorrow",
    "PR",
    "build",
    "green",
    "red",
];
/// The people messages are from: Entra object ids and display names.
pub const PEOPLE: &[(&str, &str)] = &[
    ("a660dbf8-1ebf-4be9-be48-19c602bf5194", "Megan Bowen"),
    ("8ea0e38b-efb3-4757-924a-5f94061cf8c2", "Alex Wilber"),
    ("97f62344-57dc-409c-88ad-c4af14158ff5", "Lidia Holloway"),
    ("3e9f1b2c-6d4a-4c1e-9f7b-2a8d5c6e7f90", "Zoë Ängström"),
];

impl Workload {
    pub fn new(cfg: WorkloadConfig, recipient: Recipient) -> Self {
        let fixed_key = cfg.reuse_key.then(|| {
            let mut k = zeroize::Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(k.as_mut()).expect("system RNG");
            let wrapped = recipient.wrap_key(&k);
            (k, wrapped)
        });
        Workload {
            rng: StdRng::seed_from_u64(cfg.seed),
            recipient,
            clock: 1_700_000_000_000 + (cfg.seed as i64 % 1_000_000) * 1_000_000,
            existing: Vec::new(),
            fixed_key,
            cfg,
        }
    }

    /// Messages from `epoch_ms` on (default: a fixed past time, for reproducible runs); a run
    /// whose gaps are backfilled needs them now, inside the gap's window.
    pub fn starting_at(mut self, epoch_ms: i64) -> Self {
        self.clock = epoch_ms;
        self
    }

    /// The subscription id and clientState the items carry.
    pub fn subscription(&self) -> (&str, &str) {
        (&self.cfg.subscription_id, &self.cfg.client_state)
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1 + self.rng.gen_range(0..5);
        self.clock
    }

    fn tenant(&mut self) -> String {
        format!(
            "{:08x}-0000-4000-8000-{:012x}",
            0x7e0a_0000u32,
            self.rng.gen_range(0..self.cfg.tenants.max(1))
        )
    }

    fn conversation(&mut self) -> Conversation {
        let chats = self.cfg.chats.max(1);
        if self.rng.gen_bool(0.5) {
            let team = self.rng.gen_range(0..self.cfg.teams.max(1));
            Conversation::Channel {
                team_id: format!("{team:08x}-1111-4222-8333-444455556666"),
                channel_id: format!(
                    "19:{team:x}{:04x}general@thread.tacv2",
                    self.rng.gen_range(0..3)
                ),
            }
        } else if self.rng.gen_bool(0.6) {
            // 1:1 chats are named after both users.
            let n = self.rng.gen_range(0..chats);
            Conversation::Chat { chat_id: format!("19:{n:08x}-aaaa-4bbb-8ccc-000000000001_{n:08x}-dddd-4eee-8fff-000000000002@unq.gbl.spaces") }
        } else {
            Conversation::Chat {
                chat_id: format!("19:meeting_{:016x}@thread.v2", self.rng.gen_range(0..chats)),
            }
        }
    }

    fn html(&mut self, mentions: &[(String, String)]) -> String {
        let n = self.rng.gen_range(3..25);
        let mut text: Vec<String> = (0..n)
            .map(|_| WORDS[self.rng.gen_range(0..WORDS.len())].to_string())
            .collect();
        for (i, (_, name)) in mentions.iter().enumerate() {
            text.insert(0, format!("<at id=\"{i}\">{name}</at>"));
        }
        // Only drawn when asked for, so seeded workloads without it stay as they were.
        if self.cfg.sensitive_fraction > 0.0
            && self.rng.gen_bool(self.cfg.sensitive_fraction.min(1.0))
        {
            let card = TEST_CARDS[self.rng.gen_range(0..TEST_CARDS.len())];
            text.push(format!("card {card} exp 12/29"));
        }
        format!("<p>{} &amp; more</p>", text.join(" "))
    }

    fn new_message(&mut self) -> MessageSpec {
        let tenant = self.tenant();
        let conversation = self.conversation();
        let id = self.tick();
        let mentions: Vec<(String, String)> = (0..self.rng.gen_range(0..3))
            .map(|_| {
                let (id, name) = PEOPLE[self.rng.gen_range(0..PEOPLE.len())];
                (id.to_string(), name.to_string())
            })
            .collect();
        let html = self.html(&mentions);
        let (from_id, from_name) = PEOPLE[self.rng.gen_range(0..PEOPLE.len())];
        let mut spec = MessageSpec {
            mentions,
            from_id: from_id.into(),
            from_name: from_name.into(),
            ..MessageSpec::new(&tenant, conversation, id, ChangeType::Created, &html)
        };
        if self.rng.gen_bool(0.1) {
            spec.attachments.push(format!("report-{id}.xlsx"));
        }
        if self.rng.gen_bool(0.2) {
            spec.reactions.push(("like".into(), PEOPLE[0].0.into()));
        }
        spec
    }

    /// The next message change: mostly new messages, some replies, edits and deletes.
    fn next_spec(&mut self) -> MessageSpec {
        let roll: f64 = self.rng.gen();
        let pick = (!self.existing.is_empty()).then(|| self.rng.gen_range(0..self.existing.len()));
        match pick {
            Some(i) if roll < 0.15 => {
                // Reply in a channel thread (or another message in the chat).
                let parent = self.existing[i].clone();
                let mut spec = self.new_message();
                spec.tenant_id = parent.tenant_id.clone();
                spec.conversation = parent.conversation.clone();
                if matches!(parent.conversation, Conversation::Channel { .. })
                    && parent.reply_to_id.is_none()
                {
                    spec.reply_to_id = Some(parent.message_id.clone());
                }
                spec
            }
            Some(i) if roll < 0.30 => {
                let mut spec = self.existing[i].clone();
                spec.change_type = ChangeType::Updated;
                spec.modified_ms = self.tick();
                spec.html = format!("{} (edited)", spec.html);
                self.existing[i] = spec.clone();
                spec
            }
            Some(i) if roll < 0.35 => {
                let mut spec = self.existing.swap_remove(i);
                spec.change_type = ChangeType::Deleted;
                spec.modified_ms = self.tick();
                spec
            }
            _ => self.new_message(),
        }
    }

    /// The next item: a good one, or (with the configured probability) a bad one.
    pub fn next_item(&mut self) -> Item {
        let spec = self.next_spec();
        let bad = (self.rng.gen::<f64>() < self.cfg.bad_fraction)
            .then(|| BAD_KINDS[self.rng.gen_range(0..BAD_KINDS.len())]);
        if bad.is_none() && spec.change_type != ChangeType::Deleted && self.existing.len() < 10_000
        {
            if let Some(pos) = self.existing.iter().position(|e| {
                e.message_id == spec.message_id && e.conversation == spec.conversation
            }) {
                self.existing[pos] = spec.clone();
            } else {
                self.existing.push(spec.clone());
            }
        }
        let id = event_id(
            &spec.tenant_id,
            &spec.resource(),
            spec.change_type.as_str(),
            &spec.modified_ms.to_string(),
        );
        let message = spec.chat_message();
        let plaintext = serde_json::to_vec(&message).expect("json");
        let content = match &self.fixed_key {
            Some((key, wrapped)) => self
                .recipient
                .encrypt_with_wrapped_key(key, wrapped, &plaintext),
            None => self.recipient.encrypt(&plaintext),
        };
        let mut encrypted = serde_json::to_value(content).expect("json");
        let mut client_state = self.cfg.client_state.clone();
        match bad {
            Some("client_state") => client_state = format!("not-{client_state}"),
            Some("signature_mismatch") => tamper(&mut encrypted),
            Some(_) => encrypted["encryptionCertificateId"] = Value::from("unknown-certificate-id"),
            None => {}
        }
        Item {
            message: bad.is_none().then_some(message),
            json: spec.notification_with(&self.cfg.subscription_id, &client_state, &encrypted),
            expect: match bad {
                Some(reason) => Expect::Rejected(reason, id),
                None => Expect::Event(id),
            },
            tenant_id: spec.tenant_id,
        }
    }
}
