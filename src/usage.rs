//! Usage counting: per key and minute, requests by outcome and the cost the
//! upstream reported (SPEC §11), as the filter keeps it between reports.
//!
//! A [`Tally`] is what one worker (or the reporter) counted: requests by
//! [`Outcome`] and cost micro-units per `(minute, key)`. Tallies merge
//! ([`Tally::merge`]); a worker ships its own to the reporter in the compact
//! binary form of [`Tally::encode`] (read back, bounds-checked, by
//! [`Tally::merge_encoded`]); the reporter turns what it holds into the JSON
//! bodies of docs/usage-protocol.md ([`batch_bodies`]). The upstream's cost
//! header is read by [`parse_cost`]. Pure: no host call, no clock, no
//! randomness (the caller passes the time and the batch id).

use crate::decision::DenyReason;
use crate::feed::KeySet;
use crate::ids::KeyId;
use hashbrown::HashMap;
use std::fmt::Write;

/// Outcome counters per key and minute: `allowed`, one per refusal reason,
/// `rate_limited_envoy`.
pub const OUTCOMES: usize = DenyReason::ALL.len() + 2;
/// The largest count or cost the protocol carries (2^53); bigger is clamped.
pub const MAX_VALUE: u64 = 1 << 53;
/// At most this many `(minute, key)` rows in one batch (the protocol's limit).
pub const MAX_ROWS_PER_BATCH: usize = 100_000;
/// Bytes of one entry of [`Tally::encode`] before its non-zero counts.
const ENTRY_HEAD: usize = 8 + 8 + 8 + 2;

/// What became of one request of a known key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed by the filter and passed on.
    Allowed,
    /// Refused by the filter for this reason.
    Denied(DenyReason),
    /// Allowed by the filter, then refused by Envoy's `local_ratelimit`
    /// (a 429 carrying `x-envoy-ratelimited`).
    RateLimitedEnvoy,
}

impl Outcome {
    /// Its counter's position in [`Counts::requests`].
    fn index(self) -> usize {
        match self {
            Outcome::Allowed => 0,
            Outcome::Denied(reason) => DenyReason::ALL
                .iter()
                .position(|r| *r == reason)
                .map_or(0, |i| i + 1),
            Outcome::RateLimitedEnvoy => OUTCOMES - 1,
        }
    }
}

/// The protocol's name of the counter at position `i` of [`Counts::requests`].
pub fn outcome_name(i: usize) -> &'static str {
    match i.checked_sub(1).map(|j| DenyReason::ALL.get(j)) {
        None => "allowed",
        Some(Some(reason)) => reason.as_str(),
        Some(None) => "rate_limited_envoy",
    }
}

/// One key's counts in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests by outcome (see [`outcome_name`]).
    pub requests: [u64; OUTCOMES],
    /// Sum of the upstream's reported cost, micro-units.
    pub cost_micros: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.requests.iter_mut().zip(other.requests) {
            *mine = mine.saturating_add(theirs).min(MAX_VALUE);
        }
        self.cost_micros = self
            .cost_micros
            .saturating_add(other.cost_micros)
            .min(MAX_VALUE);
    }
}

/// Counts per `(minute start in unix seconds, key)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    entries: HashMap<(u64, u64), Counts>,
}

/// The start of the minute of `now_secs`.
pub fn minute_of(now_secs: u64) -> u64 {
    now_secs - now_secs % 60
}

impl Tally {
    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of `(minute, key)` rows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn entry(&mut self, key: KeyId, now_secs: u64) -> &mut Counts {
        self.entries
            .entry((minute_of(now_secs), key.0))
            .or_default()
    }

    /// Counts one request of `key` at `now_secs`.
    pub fn count(&mut self, key: KeyId, now_secs: u64, outcome: Outcome) {
        if let Some(n) = self.entry(key, now_secs).requests.get_mut(outcome.index()) {
            *n = n.saturating_add(1).min(MAX_VALUE);
        }
    }

    /// Adds `micros` of cost to `key` at `now_secs`.
    pub fn cost(&mut self, key: KeyId, now_secs: u64, micros: u64) {
        let counts = self.entry(key, now_secs);
        counts.cost_micros = counts.cost_micros.saturating_add(micros).min(MAX_VALUE);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: Tally) {
        if self.entries.is_empty() {
            self.entries = other.entries;
            return;
        }
        for (at, counts) in other.entries {
            self.entries.entry(at).or_default().add(&counts);
        }
    }

    /// Everything counted so far; this tally starts over empty.
    pub fn take(&mut self) -> Tally {
        std::mem::take(self)
    }

    /// The rows, oldest minute first (then by key).
    fn sorted(&self) -> Vec<(&(u64, u64), &Counts)> {
        let mut rows: Vec<_> = self.entries.iter().collect();
        rows.sort_unstable_by_key(|(at, _)| **at);
        rows
    }

    /// The compact form a worker ships to the reporter: per row, little
    /// endian, `minute u64, key u64, cost u64, mask u16` (a bit per
    /// non-zero outcome) and then each non-zero count as `u64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * (ENTRY_HEAD + 8));
        for (&(minute, key), counts) in &self.entries {
            out.extend_from_slice(&minute.to_le_bytes());
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&counts.cost_micros.to_le_bytes());
            let mask = counts
                .requests
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .fold(0u16, |m, (i, _)| m | (1 << i));
            out.extend_from_slice(&mask.to_le_bytes());
            for n in counts.requests.iter().filter(|n| **n > 0) {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// Adds the counts of `bytes` (made by [`Tally::encode`]); false, with
    /// nothing added, when they are not well formed.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> bool {
        match decode(bytes) {
            Some(other) => {
                self.merge(other);
                true
            }
            None => false,
        }
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(word.try_into().ok()?))
}

fn decode(bytes: &[u8]) -> Option<Tally> {
    let mut tally = Tally::default();
    let mut at = 0;
    while at < bytes.len() {
        let (minute, key, cost) = (
            u64_at(bytes, at)?,
            u64_at(bytes, at + 8)?,
            u64_at(bytes, at + 16)?,
        );
        let mask_bytes = bytes.get(at + 24..at + ENTRY_HEAD)?;
        let mask = u16::from_le_bytes(mask_bytes.try_into().ok()?);
        if minute % 60 != 0 || mask >> OUTCOMES != 0 {
            return None;
        }
        at += ENTRY_HEAD;
        let mut counts = Counts {
            cost_micros: cost.min(MAX_VALUE),
            ..Counts::default()
        };
        for (i, n) in counts.requests.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *n = u64_at(bytes, at)?.min(MAX_VALUE);
                at += 8;
            }
        }
        tally.entries.entry((minute, key)).or_default().add(&counts);
    }
    Some(tally)
}

/// The JSON bodies of `POST /v1/usage` for everything in `tally`, at most
/// [`MAX_ROWS_PER_BATCH`] rows each; `ids` gives each its batch id.
pub fn batch_bodies(
    tally: &Tally,
    key_set: KeySet,
    mut ids: impl FnMut() -> [u8; 16],
) -> Vec<([u8; 16], String)> {
    let rows = tally.sorted();
    rows.chunks(MAX_ROWS_PER_BATCH)
        .map(|chunk| {
            let id = ids();
            (id, batch_body(&hex::encode(id), key_set, chunk))
        })
        .collect()
}

/// One body of docs/usage-protocol.md; `rows` are sorted by minute.
fn batch_body(batch_id: &str, key_set: KeySet, rows: &[(&(u64, u64), &Counts)]) -> String {
    let mut out = String::with_capacity(96 + rows.len() * 80);
    let _ = write!(
        out,
        r#"{{"batch_id":"{batch_id}","key_set":"{key_set}","minutes":["#
    );
    let mut minute = None;
    for (&(at, key), counts) in rows {
        if minute != Some(at) {
            if minute.is_some() {
                out.push_str("]},");
            }
            let _ = write!(out, r#"{{"minute":{at},"keys":["#);
            minute = Some(at);
        } else {
            out.push(',');
        }
        let _ = write!(out, r#"{{"key_id":"{}","outcomes":{{"#, KeyId(key));
        let mut first = true;
        for (i, n) in counts.requests.iter().enumerate().filter(|(_, n)| **n > 0) {
            let comma = if first { "" } else { "," };
            let _ = write!(out, r#"{comma}"{}":{n}"#, outcome_name(i));
            first = false;
        }
        let _ = write!(out, r#"}},"cost_micros":{}}}"#, counts.cost_micros);
    }
    if minute.is_some() {
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// What an upstream's cost header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// A cost in micro-units.
    Micros(u64),
    /// Negative (counted as 0) or past [`MAX_VALUE`] (counted as that).
    Clamped(u64),
    /// Not an integer: ignored.
    Malformed,
}

/// Reads a cost header value: an integer of micro-units, ASCII spaces
/// around it allowed.
pub fn parse_cost(value: &[u8]) -> Cost {
    let value = value.trim_ascii();
    let (negative, digits) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Cost::Malformed;
    }
    if negative {
        return if digits.iter().all(|d| *d == b'0') {
            Cost::Micros(0)
        } else {
            Cost::Clamped(0)
        };
    }
    let parsed = digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    match parsed {
        Some(n) if n <= MAX_VALUE => Cost::Micros(n),
        _ => Cost::Clamped(MAX_VALUE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const KS: KeySet = KeySet([3; 16]);

    #[test]
    fn outcome_names_follow_the_protocol() {
        assert_eq!(outcome_name(Outcome::Allowed.index()), "allowed");
        assert_eq!(
            outcome_name(Outcome::RateLimitedEnvoy.index()),
            "rate_limited_envoy"
        );
        for reason in DenyReason::ALL {
            assert_eq!(
                outcome_name(Outcome::Denied(reason).index()),
                reason.as_str()
            );
        }
    }

    #[test]
    fn counts_per_key_and_minute_and_merges() {
        let mut a = Tally::default();
        a.count(KeyId(1), 120, Outcome::Allowed);
        a.count(KeyId(1), 179, Outcome::Allowed);
        a.count(KeyId(1), 180, Outcome::Denied(DenyReason::RateLimited));
        a.cost(KeyId(1), 150, 1500);
        let mut b = Tally::default();
        b.count(KeyId(1), 121, Outcome::Allowed);
        b.count(KeyId(2), 121, Outcome::RateLimitedEnvoy);
        b.cost(KeyId(1), 121, 500);
        a.merge(b);
        assert_eq!(a.len(), 3);
        let first = a.entries.get(&(120, 1)).unwrap();
        assert_eq!((first.requests[0], first.cost_micros), (3, 2000));
        assert_eq!(a.entries.get(&(120, 2)).unwrap().requests[OUTCOMES - 1], 1);
        assert!(a.take().len() == 3 && a.is_empty());
    }

    #[test]
    fn the_binary_form_round_trips_and_refuses_garbage() {
        let mut a = Tally::default();
        a.count(KeyId(7), 60, Outcome::Allowed);
        a.count(KeyId(7), 60, Outcome::Denied(DenyReason::Expired));
        a.cost(KeyId(9), 61, 42);
        let bytes = a.encode();
        let mut b = Tally::default();
        assert!(b.merge_encoded(&bytes));
        assert_eq!(a, b);
        for cut in 1..bytes.len() {
            // A cut at a row boundary is a smaller tally; anywhere else, nothing.
            let mut c = Tally::default();
            assert!(c.merge_encoded(&bytes[..cut]) || c.is_empty(), "cut {cut}");
        }
        assert!(!Tally::default().merge_encoded(&bytes[..bytes.len() - 1]));
        let mut odd_minute = bytes.clone();
        odd_minute[0] = 1;
        assert!(!Tally::default().merge_encoded(&odd_minute));
        assert!(Tally::default().merge_encoded(&[]));
    }

    #[test]
    fn batches_are_the_protocols_json() {
        let mut t = Tally::default();
        t.count(KeyId(1), 60, Outcome::Allowed);
        t.count(KeyId(1), 60, Outcome::Denied(DenyReason::MissingScope));
        t.cost(KeyId(1), 60, 1500);
        t.count(KeyId(2), 60, Outcome::Allowed);
        t.count(KeyId(1), 120, Outcome::RateLimitedEnvoy);
        let bodies = batch_bodies(&t, KS, || [0xab; 16]);
        assert_eq!(bodies.len(), 1);
        let v: Value = serde_json::from_str(&bodies[0].1).unwrap();
        assert_eq!(v["batch_id"], "ab".repeat(16));
        assert_eq!(v["key_set"], KS.to_string());
        let minutes = v["minutes"].as_array().unwrap();
        assert_eq!(minutes.len(), 2);
        assert_eq!(minutes[0]["minute"], 60);
        let k1 = &minutes[0]["keys"][0];
        assert_eq!(k1["key_id"], "key_0000000000000001");
        assert_eq!(k1["outcomes"]["allowed"], 1);
        assert_eq!(k1["outcomes"]["missing_scope"], 1);
        assert_eq!(k1["cost_micros"], 1500);
        assert_eq!(minutes[0]["keys"][1]["key_id"], "key_0000000000000002");
        assert_eq!(minutes[1]["keys"][0]["outcomes"]["rate_limited_envoy"], 1);
        assert!(batch_bodies(&Tally::default(), KS, || [0; 16]).is_empty());
    }

    #[test]
    fn big_tallies_are_split_into_batches() {
        let mut t = Tally::default();
        for k in 0..(MAX_ROWS_PER_BATCH as u64 + 5) {
            t.count(KeyId(k), 0, Outcome::Allowed);
        }
        let mut n = 0u8;
        let bodies = batch_bodies(&t, KS, || {
            n += 1;
            [n; 16]
        });
        assert_eq!(bodies.len(), 2);
        assert_ne!(bodies[0].0, bodies[1].0);
        let last: Value = serde_json::from_str(&bodies[1].1).unwrap();
        assert_eq!(last["minutes"][0]["keys"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn cost_headers_are_read_clamped_or_ignored() {
        assert_eq!(parse_cost(b"1500"), Cost::Micros(1500));
        assert_eq!(parse_cost(b" 0 "), Cost::Micros(0));
        assert_eq!(parse_cost(b"-0"), Cost::Micros(0));
        assert_eq!(parse_cost(b"-5"), Cost::Clamped(0));
        assert_eq!(parse_cost(b"9007199254740993"), Cost::Clamped(MAX_VALUE));
        assert_eq!(
            parse_cost(b"99999999999999999999999"),
            Cost::Clamped(MAX_VALUE)
        );
        for bad in [&b""[..], b"1.5", b"abc", b"+3", b"1 2", b"-", b"0x10"] {
            assert_eq!(parse_cost(bad), Cost::Malformed, "{bad:?}");
        }
    }
}
