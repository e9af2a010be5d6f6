//! Property tests: any bytes as header, path, key or feed body get an answer,
//! never a panic; the key table matches a plain map under any deltas and
//! any page split. `PROPTEST_CASES=200000 cargo test -p keygate property` for a long run.

use crate::config::FilterConfig;
use crate::credential::{
    extract, strip_query_key, strip_subprotocol_key, Extracted, SEC_WEBSOCKET_PROTOCOL,
    SUBPROTOCOL_PREFIX,
};
use crate::decision::{Decision, Policy, Request};
use crate::errors::ErrorFormat;
use crate::feed::{
    encode_delta, encode_snapshot, encode_snapshot_page, FeedEntry, FeedOp, KeyStatus,
};
use crate::ids::{KeyId, OrgId};
use crate::key::{self, Environment};
use crate::limits::RateLimits;
use crate::table::{decode, KeyTable, SnapshotBuilder, Update};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const KS: crate::feed::KeySet = crate::feed::KeySet([7; 16]);

/// 2000 cases per property, or `PROPTEST_CASES` for a long run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn header() -> impl Strategy<Value = (String, String)> {
    let names = prop_oneof![
        Just("authorization".to_string()),
        Just("x-api-key".to_string()),
        Just("x-org-id".to_string()),
        Just("access-control-request-method".to_string()),
        Just("sec-websocket-protocol".to_string()),
        "\\PC{0,12}",
    ];
    (
        names,
        prop_oneof![
            "Bearer \\PC{0,80}",
            "\\PC{0,80}",
            ".{0,80}",
            "( ?(keygate\\.bearer\\.)?[a-z0-9_.]{0,20} ?,?){0,4}",
        ],
    )
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z/]{0,20}\\?(api_key=[%A-Za-z0-9_]{0,60}&?){0,3}[a-z=&%]{0,20}",
        "\\PC{0,100}",
        ".{0,100}",
    ]
}

fn body_ops() -> impl Strategy<Value = Vec<(u8, bool, u64)>> {
    prop::collection::vec((any::<u8>(), any::<bool>(), any::<u64>()), 0..20)
}

fn table_body(ops: &[(u8, bool, u64)], snapshot: bool) -> Vec<u8> {
    let entry = |n: u8, x: u64| keyed(u16::from(n), x);
    if snapshot {
        // One entry per hash (the last one), as a snapshot must be.
        let unique: BTreeMap<u8, u64> = ops.iter().map(|&(n, _, x)| (n, x)).collect();
        let entries: Vec<_> = unique.into_iter().map(|(n, x)| entry(n, x)).collect();
        encode_snapshot(KS, 1, &entries)
    } else {
        let ops: Vec<_> = ops
            .iter()
            .map(|&(n, remove, x)| {
                if remove {
                    FeedOp::Remove(spread_hash(u16::from(n)))
                } else {
                    FeedOp::Upsert(entry(n, x))
                }
            })
            .collect();
        encode_delta(KS, 1, 2, &ops)
    }
}

/// Keys of the model tests: a few hundred, spread over the prefix space.
const UNIVERSE: u16 = 400;

pub(crate) fn spread_hash(id: u16) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(
        &u64::from(id)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_be_bytes(),
    );
    hash[30..].copy_from_slice(&id.to_be_bytes());
    hash
}

/// The key `id` in state `x` (every field derives from `x`).
pub(crate) fn keyed(id: u16, x: u64) -> FeedEntry {
    FeedEntry {
        hash: spread_hash(id),
        key_id: KeyId(x),
        org_id: OrgId(x / 3),
        expires_at: x % 7 * 1000,
        scopes: format!("s:{}", x % 4),
        tier: format!("t{}", x % 3),
        environment: if x.is_multiple_of(2) {
            Environment::Live
        } else {
            Environment::Test
        },
        status: KeyStatus::ALL[(x % 4) as usize],
        // Some keys have limits, some an owner, some both, most neither.
        limits: if x % 5 == 1 {
            RateLimits {
                per_minute: (x % 11) as u32,
                per_day: (x % 13) as u32 + 1,
            }
        } else {
            RateLimits::NONE
        },
        external_id: (x % 3 == 1).then(|| format!("owner-{}", x % 17)),
    }
}

/// A lookup's result: key id, org id, expiry, scopes, tier, environment,
/// then status, own limits and owner.
type Answer = (
    u64,
    u64,
    u64,
    String,
    String,
    Environment,
    (KeyStatus, RateLimits, Option<String>),
);

/// What the table answers for every key of the universe.
fn answers(table: &KeyTable) -> Vec<Option<Answer>> {
    (0..UNIVERSE)
        .map(|id| {
            table.get(&spread_hash(id)).map(|r| {
                (
                    r.key_id.0,
                    r.org_id.0,
                    r.expires_at,
                    r.scopes.to_string(),
                    r.tier.to_string(),
                    r.environment,
                    (r.status, r.limits, r.external_id.map(str::to_string)),
                )
            })
        })
        .collect()
}

/// What a table holding exactly `model` answers.
fn model_answers(model: &HashMap<u16, u64>) -> Vec<Option<Answer>> {
    (0..UNIVERSE)
        .map(|id| {
            model.get(&id).map(|&x| {
                let e = keyed(id, x);
                (
                    e.key_id.0,
                    e.org_id.0,
                    e.expires_at,
                    e.scopes,
                    e.tier,
                    e.environment,
                    (e.status, e.limits, e.external_id),
                )
            })
        })
        .collect()
}

fn whole(version: u64, model: &HashMap<u16, u64>) -> KeyTable {
    let entries: Vec<_> = model.iter().map(|(&id, &x)| keyed(id, x)).collect();
    let Ok(Update::Snapshot(table)) = decode(&encode_snapshot(KS, version, &entries)) else {
        panic!("snapshot refused")
    };
    *table
}

fn key_states() -> impl Strategy<Value = HashMap<u16, u64>> {
    prop::collection::hash_map(0..UNIVERSE, 0..1000u64, 0..300)
}

fn delta_ops() -> impl Strategy<Value = Vec<Vec<(u16, bool, u64)>>> {
    let op = (0..UNIVERSE, prop::bool::weighted(0.4), 0..1000u64);
    prop::collection::vec(prop::collection::vec(op, 0..80), 1..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn extraction_never_panics_and_stripping_removes_the_key(headers in prop::collection::vec(header(), 0..6), path in path()) {
        let _ = extract(&headers, &path);
        if let Some(stripped) = strip_query_key(&path) {
            let no_headers: [(&str, &str); 0] = [];
            prop_assert!(matches!(extract(&no_headers, &stripped), Extracted::Missing));
            prop_assert!(stripped.len() < path.len());
        }
    }

    #[test]
    fn stripping_the_subprotocol_removes_only_the_key(values in prop::collection::vec("( ?(keygate\\.bearer\\.)?[a-z0-9_.]{0,12} ?,?){0,4}", 0..3)) {
        let mut headers = vec![("upgrade".to_string(), "websocket".to_string())];
        headers.extend(values.iter().map(|v| (SEC_WEBSOCKET_PROTOCOL.to_string(), v.clone())));
        let offered: Vec<String> = values.iter().flat_map(|v| v.split(',')).map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        match strip_subprotocol_key(&headers) {
            None => prop_assert!(offered.iter().all(|e| !e.starts_with(SUBPROTOCOL_PREFIX))),
            Some(kept) => {
                let apps: Vec<&String> = offered.iter().filter(|e| !e.starts_with(SUBPROTOCOL_PREFIX)).collect();
                prop_assert_eq!(kept.clone(), apps.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "));
                let after = [("upgrade".to_string(), "websocket".to_string()), (SEC_WEBSOCKET_PROTOCOL.to_string(), kept)];
                prop_assert!(matches!(extract(&after, "/"), Extracted::Missing));
            }
        }
    }

    #[test]
    fn decisions_never_panic(method in "[A-Z]{0,8}", headers in prop::collection::vec(header(), 0..6), path in path(), now in any::<u64>()) {
        let config = FilterConfig::from_json(br#"{"feed":{"cluster":"c"},"rules":[{"path_prefix":"/a","any_of":["a:b"]},{"path_prefix":"/p","public":true}]}"#).unwrap();
        let policy = Policy::from(&config);
        let Ok(Update::Snapshot(table)) = decode(&table_body(&[(1, false, 1)], true)) else { panic!() };
        let request = Request { method: &method, path: &path, headers: &headers };
        for t in [None, Some(&*table)] {
            match policy.decide(t, &request, now) {
                Decision::Deny(d) => for format in ErrorFormat::ALL {
                    serde_json::from_str::<serde_json::Value>(&d.body(format)).unwrap();
                },
                Decision::Allow(a) => prop_assert!(a.identity.is_none() || t.is_some()),
            }
        }
    }

    /// The path rules see (of a path starting with `/`) has no `//`, `.`, `..` or dot-ending segment, no
    /// `\\` or `;`, and is its own match when no `%` is left (see the `path`
    /// fuzz target).
    #[test]
    fn matched_paths_are_normal(path in prop_oneof!["[/.;%2eEfF5cCbB3aAx\\\\]{0,30}", path()], params in any::<bool>()) {
        let matched = crate::rules::match_path(&path, params).map(|m| m.into_owned());
        if let (true, Ok(matched)) = (path.starts_with('/'), matched) {
            prop_assert!(matched.starts_with('/') && !matched.contains(['\\', ';']), "{:?}", matched);
            let inner = matched.trim_end_matches('/');
            prop_assert!(inner.split('/').skip(1).all(|s| !s.is_empty() && !s.ends_with('.')), "{:?}", matched);
            if !matched.contains(['%', '?', '#']) {
                let again = crate::rules::match_path(&matched, false).map(|m| m.into_owned());
                prop_assert_eq!(again, Ok(matched));
            }
        }
    }

    #[test]
    fn key_parse_never_panics(s in "\\PC{0,80}", prefix in "[a-z]{1,4}") {
        for format in key::KeyFormat::ALL {
            let _ = format.parse(&s, &prefix);
        }
        let _ = key::display_prefix(&s);
    }

    #[test]
    fn generated_keys_always_parse(live in any::<bool>()) {
        let env = if live { Environment::Live } else { Environment::Test };
        let k = key::generate("rk", env).unwrap();
        prop_assert_eq!(key::parse(&k, "rk"), Ok(env));
        let k = key::KeyFormat::PrefixSecret.generate("raeh", Environment::Live).unwrap();
        prop_assert_eq!(key::KeyFormat::PrefixSecret.parse(&k, "raeh"), Ok(Environment::Live));
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
        let mut with_magic = crate::feed::MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode(&with_magic);
    }

    #[test]
    fn mutated_bodies_never_panic(ops in body_ops(), snapshot in any::<bool>(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut body = table_body(&ops, snapshot);
        for (at, byte) in flips {
            let i = at % body.len();
            body[i] = byte;
        }
        let base = decode(&table_body(&ops, true));
        if let (Ok(Update::Snapshot(mut table)), Ok(Update::Delta(delta))) = (base, decode(&body)) {
            let _ = table.apply(&delta);
        }
    }

    #[test]
    fn deltas_match_a_model(ops in body_ops()) {
        let Ok(Update::Snapshot(mut table)) = decode(&table_body(&[], true)) else { panic!() };
        let Ok(Update::Delta(delta)) = decode(&table_body(&ops, false)) else { panic!() };
        table.apply(&delta).unwrap();
        let mut model = std::collections::HashMap::new();
        for &(n, remove, x) in &ops {
            if remove { model.remove(&n); } else { model.insert(n, x); }
        }
        prop_assert_eq!(table.len(), model.len());
        for (n, x) in model {
            prop_assert_eq!(table.get(&spread_hash(u16::from(n))).map(|r| r.key_id), Some(KeyId(x)));
        }
    }
}

proptest! {
    // Each case builds tables and checks every key of the universe, often.
    #![proptest_config(ProptestConfig::with_cases(cases().div_ceil(4)))]

    #[test]
    fn delta_sequences_match_a_model_across_merges(start in key_states(), deltas in delta_ops()) {
        let mut model = start;
        let mut table = whole(1, &model);
        for (step, ops) in deltas.iter().enumerate() {
            let feed_ops: Vec<_> = ops
                .iter()
                .map(|&(id, remove, x)| if remove { FeedOp::Remove(spread_hash(id)) } else { FeedOp::Upsert(keyed(id, x)) })
                .collect();
            let v = table.version();
            let Ok(Update::Delta(delta)) = decode(&encode_delta(KS, v, v + 1, &feed_ops)) else { panic!() };
            table.apply(&delta).unwrap();
            for &(id, remove, x) in ops {
                if remove { model.remove(&id); } else { model.insert(id, x); }
            }
            prop_assert_eq!(table.version(), 2 + step as u64);
            prop_assert_eq!(table.len(), model.len());
            prop_assert_eq!(answers(&table), model_answers(&model));
        }
        prop_assert_eq!(answers(&whole(9, &model)), answers(&table));
    }

    #[test]
    fn any_page_split_builds_the_whole_snapshot(
        keys in key_states(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        versions in prop::collection::vec(1..50u64, 9),
        hint in prop_oneof![Just(0usize), 0..400usize, Just(usize::MAX)],
    ) {
        let mut entries: Vec<_> = keys.iter().map(|(&id, &x)| keyed(id, x)).collect();
        entries.sort_by_key(|e| e.hash);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(entries.len() + 1)).collect();
        bounds.extend([0, entries.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        // Distinct bounds: no page is empty, unless the snapshot is (one page).
        let mut ranges: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        if ranges.is_empty() {
            ranges.push((0, 0));
        }
        let mut builder = SnapshotBuilder::new(hint);
        for (i, &(from, to)) in ranges.iter().enumerate() {
            prop_assert!(!builder.is_complete());
            let more = i + 1 < ranges.len();
            builder.add_page(&encode_snapshot_page(KS, versions[i], &entries[from..to], more)).unwrap();
        }
        prop_assert!(builder.is_complete());
        let paged = builder.finish().unwrap();
        let lowest = versions[..ranges.len()].iter().copied().min().unwrap();
        let whole = whole(lowest, &keys);
        prop_assert_eq!((paged.version(), paged.len()), (whole.version(), whole.len()));
        prop_assert_eq!(answers(&paged), answers(&whole));
        prop_assert_eq!(answers(&paged), model_answers(&keys));
        prop_assert!(paged.memory_bytes() <= whole.memory_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() / 50))]

    /// Without a size hint (a VM's own first table, native), a snapshot big
    /// enough to be sized from its first page's share of the hash space
    /// holds exactly the model's keys, whatever the split, and keeps no
    /// more memory than one built from a single body.
    #[test]
    fn unhinted_big_snapshots_match_a_model(
        ids in prop::collection::btree_set(any::<u16>(), 1100..3000),
        first in 1024..1100usize,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let model: HashMap<u16, u64> = ids.iter().map(|&id| (id, u64::from(id))).collect();
        let mut entries: Vec<_> = model.iter().map(|(&id, &x)| keyed(id, x)).collect();
        entries.sort_by_key(|e| e.hash);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| first + c.index(entries.len() - first)).collect();
        bounds.extend([0, first, entries.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut builder = SnapshotBuilder::new(0);
        for (i, w) in bounds.windows(2).enumerate() {
            let more = i + 2 < bounds.len();
            builder.add_page(&encode_snapshot_page(KS, 3, &entries[w[0]..w[1]], more)).unwrap();
        }
        let paged = builder.finish().unwrap();
        let whole = whole(3, &model);
        prop_assert_eq!(paged.len(), model.len());
        prop_assert!(paged.memory_bytes() <= whole.memory_bytes());
        for id in (0..=u16::MAX).step_by(7).chain(ids.iter().copied()) {
            let got = paged.get(&spread_hash(id)).map(|r| r.key_id.0);
            prop_assert_eq!(got, model.get(&id).copied());
        }
    }
}
