//! Property tests: any bytes as header, path, key or feed body get an answer,
//! never a panic. `PROPTEST_CASES=200000 cargo test -p keygate property` for a long run.

use crate::config::FilterConfig;
use crate::credential::{extract, strip_query_key, Extracted};
use crate::decision::{Decision, Policy, Request};
use crate::feed::{encode_delta, encode_snapshot, FeedEntry, FeedOp};
use crate::ids::{KeyId, OrgId};
use crate::key::{self, Environment};
use crate::table::{decode, Update};
use proptest::prelude::*;

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
        "\\PC{0,12}",
    ];
    (
        names,
        prop_oneof!["Bearer \\PC{0,80}", "\\PC{0,80}", ".{0,80}"],
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
    let entry = |n: u8, x: u64| FeedEntry {
        hash: [n; 32],
        key_id: KeyId(x),
        org_id: OrgId(x / 3),
        expires_at: x % 5,
        scopes: format!("s:{}", n % 4),
        tier: format!("t{}", n % 3),
        environment: if x.is_multiple_of(2) {
            Environment::Live
        } else {
            Environment::Test
        },
    };
    if snapshot {
        let entries: Vec<_> = ops.iter().map(|&(n, _, x)| entry(n, x)).collect();
        encode_snapshot(1, &entries)
    } else {
        let ops: Vec<_> = ops
            .iter()
            .map(|&(n, remove, x)| {
                if remove {
                    FeedOp::Remove([n; 32])
                } else {
                    FeedOp::Upsert(entry(n, x))
                }
            })
            .collect();
        encode_delta(1, 2, &ops)
    }
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
    fn decisions_never_panic(method in "[A-Z]{0,8}", headers in prop::collection::vec(header(), 0..6), path in path(), now in any::<u64>()) {
        let config = FilterConfig::from_json(br#"{"feed":{"cluster":"c","token":"t"},"rules":[{"path_prefix":"/a","any_of":["a:b"]},{"path_prefix":"/p","public":true}]}"#).unwrap();
        let policy = Policy::from(&config);
        let Ok(Update::Snapshot(table)) = decode(&table_body(&[(1, false, 1)], true)) else { panic!() };
        let request = Request { method: &method, path: &path, headers: &headers };
        for t in [None, Some(&table)] {
            match policy.decide(t, &request, now) {
                Decision::Deny(d) => { serde_json::from_str::<serde_json::Value>(&d.body).unwrap(); }
                Decision::Allow(a) => prop_assert!(a.identity.is_none() || t.is_some()),
            }
        }
    }

    #[test]
    fn key_parse_never_panics(s in "\\PC{0,80}", prefix in "[a-z]{1,4}") {
        let _ = key::parse(&s, &prefix);
        let _ = key::display_prefix(&s);
    }

    #[test]
    fn generated_keys_always_parse(live in any::<bool>()) {
        let env = if live { Environment::Live } else { Environment::Test };
        let k = key::generate("rk", env).unwrap();
        prop_assert_eq!(key::parse(&k, "rk"), Ok(env));
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
        let mut with_magic = b"KGT1".to_vec();
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
            prop_assert_eq!(table.get(&[n; 32]).map(|r| r.key_id), Some(KeyId(x)));
        }
    }
}
