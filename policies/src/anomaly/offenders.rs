//! The offender book: per-client state for escalation, decay and quarantine,
//! bounded (least recently used clients are dropped first) and clock-free
//! (the caller passes the time in seconds from any fixed origin).
//!
//! Memory per client: about 130 bytes of state and index, its key twice, and
//! 4 bytes per flagged request kept for escalation (at most the largest
//! `flagged` of the policy's steps, itself at most [`super::MAX_FLAGGED`]).
//! Only clients with a flagged request get an entry: normal traffic never
//! fills the book. A decision costs about 70 ns (release build, 1,000
//! clients), about 470 ns while a flood of new clients evicts old ones.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::{applicable, ActionKind, AnomalyAction, AnomalyDecision, AnomalyPolicy, Band, Finding};
use crate::eval::RequestAttrs;

const NIL: usize = usize::MAX;
/// Flagged times are kept as milliseconds after a per-client base, rebased
/// well before `u32` milliseconds (49 days) would overflow.
const REBASE_AFTER_SECS: f64 = 1_000_000.0;

/// Per-client state for the anomaly policies of one workload.
#[derive(Debug)]
pub struct Offenders {
    capacity: usize,
    index: HashMap<Box<str>, usize>,
    slots: Vec<Slot>,
    /// Most recently used.
    head: usize,
    /// Least recently used: evicted first.
    tail: usize,
    evictions: u64,
}

#[derive(Debug)]
struct Slot {
    key: Box<str>,
    prev: usize,
    next: usize,
    client: Client,
}

#[derive(Debug, Default)]
struct Client {
    /// Origin of `flagged`, in the caller's seconds.
    base: f64,
    /// Times of recent flagged requests, ms after `base`, oldest first.
    flagged: VecDeque<u32>,
    /// Time of the last flagged request.
    last_flagged: Option<f64>,
    /// The 1-based escalation step the client is held at; 0: none.
    level: usize,
    quarantine: Option<Box<Quarantine>>,
}

#[derive(Debug)]
struct Quarantine {
    until: f64,
    policy: Box<str>,
    rule: usize,
    dry_run: bool,
    step: Option<usize>,
}

impl Client {
    fn since_base_ms(&self, now: f64) -> u32 {
        // Saturating float-to-int cast: `now` before `base` (a clock that
        // went back) counts as `base`.
        ((now - self.base) * 1000.0) as u32
    }

    /// True when a request recorded at `at` is at most `w` old at `now`.
    fn in_window(&self, at: u32, w: Duration, now: f64) -> bool {
        self.base + f64::from(at) / 1000.0 >= now - w.as_secs_f64()
    }

    /// Records a flagged request at `now` and returns the highest
    /// escalation step whose count is reached (0: none).
    fn record(&mut self, now: f64, p: &AnomalyPolicy) -> usize {
        self.last_flagged = Some(now);
        let Some(keep) = p.escalation.last().map(|s| s.flagged as usize) else { return 0 };
        let longest = p.escalation.iter().map(|s| s.within).max().unwrap_or_default();
        while self.flagged.front().is_some_and(|&t| !self.in_window(t, longest, now)) {
            self.flagged.pop_front();
        }
        if self.flagged.is_empty() {
            self.base = now;
        } else if now - self.base > REBASE_AFTER_SECS {
            // Every kept time is within `longest` of now, so none is lost.
            let shift = self.since_base_ms(now - longest.as_secs_f64());
            for t in &mut self.flagged {
                *t = t.saturating_sub(shift);
            }
            self.base += f64::from(shift) / 1000.0;
        }
        let at = self.since_base_ms(now).max(self.flagged.back().copied().unwrap_or(0));
        self.flagged.push_back(at);
        while self.flagged.len() > keep {
            self.flagged.pop_front();
        }
        for (i, s) in p.escalation.iter().enumerate().rev() {
            let count = self.flagged.iter().rev().take_while(|&&t| self.in_window(t, s.within, now)).count();
            if count >= s.flagged as usize {
                return i + 1;
            }
        }
        0
    }
}

impl Offenders {
    /// A book holding at most `capacity` clients (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), index: HashMap::new(), slots: Vec::new(), head: NIL, tail: NIL, evictions: 0 }
    }

    /// Clients currently held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no client is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Clients dropped to stay within the capacity so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// When `client`'s quarantine ends, if it is quarantined at `now`.
    pub fn quarantined_until(&self, client: &str, now: f64) -> Option<f64> {
        let q = self.slots[*self.index.get(client)?].client.quarantine.as_ref()?;
        (now < q.until).then_some(q.until)
    }

    /// Decides what to do with a request of `client` that the detector
    /// judged as `finding`, at `now` (seconds), and records it. `None` when
    /// no policy covers the request and the client is not quarantined.
    ///
    /// 1. A client quarantined until after `now` gets the quarantine decision
    ///    (reason `quarantined`, the time left) for every request, whatever
    ///    its band, as long as any anomaly policy applies to the workload.
    /// 2. Otherwise the first policy with a rule whose `to` matches decides:
    ///    the action for the band (`suspicious`, `anomalous`), or for a
    ///    client signal when that is more severe.
    /// 3. A request whose action is not `allow` is flagged and recorded. A
    ///    client with `flagged` requests within a step's window is held at that
    ///    step; while held, every request gets at least the step's action
    ///    (reason `escalation`).
    /// 4. A client with no flagged request for `decay` starts over; so does a
    ///    client whose quarantine has ended.
    pub fn decide(
        &mut self,
        policies: &[AnomalyPolicy],
        req: &RequestAttrs<'_>,
        client: &str,
        finding: &Finding,
        now: f64,
    ) -> Option<AnomalyDecision> {
        if policies.is_empty() {
            return None;
        }
        let mut slot = self.index.get(client).copied();
        if let Some(s) = slot {
            self.touch(s);
            let c = &mut self.slots[s].client;
            if let Some(q) = &c.quarantine {
                if now < q.until {
                    return Some(AnomalyDecision {
                        action: AnomalyAction::Quarantine(Duration::from_secs_f64(q.until - now)),
                        policy: q.policy.to_string(),
                        rule: q.rule,
                        dry_run: q.dry_run,
                        reason: "quarantined",
                        escalation_step: q.step,
                    });
                }
                *c = Client::default();
            }
        }
        let (p, r) = applicable(policies, req)?;
        let rule = &p.rules[r];
        let (mut kind, mut reason) = match finding.band {
            Band::Normal => (ActionKind::Allow, "normal"),
            Band::Suspicious => (rule.suspicious, "suspicious"),
            Band::Anomalous => (rule.anomalous, "anomalous"),
        };
        if finding.client_signal && rule.client_signal > kind {
            (kind, reason) = (rule.client_signal, "client_signal");
        }
        let flagged = kind != ActionKind::Allow;
        if flagged && slot.is_none() {
            slot = Some(self.insert(client));
        }
        let mut escalation_step = None;
        if let Some(s) = slot {
            let c = &mut self.slots[s].client;
            if c.last_flagged.is_some_and(|t| now - t >= p.decay.as_secs_f64()) {
                *c = Client::default();
            }
            if flagged {
                let reached = c.record(now, p);
                c.level = c.level.max(reached);
            }
            if c.level > 0 {
                let level = c.level.min(p.escalation.len());
                if let Some(step) = p.escalation.get(level.wrapping_sub(1)) {
                    if step.action > kind {
                        (kind, reason, escalation_step) = (step.action, "escalation", Some(level));
                    }
                }
            }
            if kind == ActionKind::Quarantine {
                c.quarantine = Some(Box::new(Quarantine {
                    until: now + p.quarantine.as_secs_f64(),
                    policy: p.name.as_str().into(),
                    rule: r + 1,
                    dry_run: p.dry_run,
                    step: escalation_step,
                }));
            }
        }
        Some(AnomalyDecision {
            action: p.action(kind),
            policy: p.name.clone(),
            rule: r + 1,
            dry_run: p.dry_run,
            reason,
            escalation_step,
        })
    }

    /// Moves slot `s` to the front (most recently used).
    fn touch(&mut self, s: usize) {
        if self.head == s {
            return;
        }
        self.unlink(s);
        self.push_front(s);
    }

    fn unlink(&mut self, s: usize) {
        let (prev, next) = (self.slots[s].prev, self.slots[s].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
    }

    fn push_front(&mut self, s: usize) {
        self.slots[s].prev = NIL;
        self.slots[s].next = self.head;
        if self.head != NIL {
            self.slots[self.head].prev = s;
        }
        self.head = s;
        if self.tail == NIL {
            self.tail = s;
        }
    }

    /// A fresh entry for `client` at the front, evicting the least recently
    /// used client when full.
    fn insert(&mut self, client: &str) -> usize {
        let key: Box<str> = client.into();
        let s = if self.slots.len() < self.capacity {
            self.slots.push(Slot { key: key.clone(), prev: NIL, next: NIL, client: Client::default() });
            self.slots.len() - 1
        } else {
            let s = self.tail;
            self.unlink(s);
            self.index.remove(&self.slots[s].key);
            self.evictions += 1;
            self.slots[s] = Slot { key: key.clone(), prev: NIL, next: NIL, client: Client::default() };
            s
        };
        self.index.insert(key, s);
        self.push_front(s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_state_stays_small() {
        // What the module docs promise: a slot of about 100 bytes (plus the
        // key twice, the index entry and 4 bytes per remembered flagged request).
        let slot = std::mem::size_of::<Slot>();
        let entry = std::mem::size_of::<(Box<str>, usize)>();
        assert!(slot + entry <= 136, "slot {slot} + index entry {entry} bytes");
    }
}
