//! The second look against an in-memory store that counts its reads: a
//! lagging member catches up once, a current one pays one read.

use super::*;
use crate::config::FilterConfig;
use crate::decision::Decision;
use crate::engine::sync::tests::{entry, publish_body, MemStore, KS};
use crate::feed::{encode_delta, encode_snapshot, FeedEntry, FeedOp, KeySet};
use crate::key::{self, Environment};
use crate::table::{decode, Update};
use std::cell::Cell;

const NOW: u64 = 1_800_000_000;
const CONFIG: &str = r#"{"feed":{"cluster":"cp"},"rules":[
  {"path_prefix":"/memory","any_of":["memory:write"]}]}"#;

/// A store that counts reads.
#[derive(Default)]
struct Counting {
    store: MemStore,
    reads: Cell<usize>,
}

impl SharedData for Counting {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        self.reads.set(self.reads.get() + 1);
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.store.set(key, value, cas)
    }
}

fn keys() -> SharedKeys {
    SharedKeys::new("cp|auth|/v1/key-table")
}

fn holding(key: &str, scopes: &str) -> FeedEntry {
    FeedEntry {
        hash: key::hash(key),
        scopes: scopes.into(),
        ..entry(1)
    }
}

fn snapshot(key_set: KeySet, version: u64, entries: &[FeedEntry]) -> Vec<u8> {
    encode_snapshot(key_set, version, entries)
}

fn table_of(body: &[u8]) -> Option<KeyTable> {
    match decode(body) {
        Ok(Update::Snapshot(t)) => Some(*t),
        _ => None,
    }
}

/// The leader's store at version 1 (one key), and a member holding it.
fn lagging(reader: &str) -> (Counting, Option<KeyTable>) {
    let store = Counting::default();
    let body = snapshot(KS, 1, &[holding(reader, "memory:read")]);
    publish_body(&store.store, &keys(), &body, 10);
    (store, table_of(&body))
}

fn decide<'t>(policy: &Policy, table: &'t Option<KeyTable>, key: &str) -> Decision<'t> {
    let headers = [
        (":method", "POST"),
        (":path", "/memory"),
        ("x-api-key", key),
    ];
    policy.decide(table.as_ref(), &Request::from_headers(&headers), NOW)
}

fn lifts(policy: &Policy, table: &Option<KeyTable>, key: &str) -> bool {
    let headers = [
        (":method", "POST"),
        (":path", "/memory"),
        ("x-api-key", key),
    ];
    match decide(policy, table, key) {
        Decision::Deny(d) => may_lift(policy, &Request::from_headers(&headers), &d),
        Decision::Allow(_) => false,
    }
}

fn policy() -> Policy {
    Policy::from(&FilterConfig::from_json(CONFIG.as_bytes()).unwrap())
}

#[test]
fn a_key_created_after_the_members_table_is_allowed_after_one_catch_up() {
    let [reader, fresh] = [0; 2].map(|_| key::generate("rk", Environment::Live).unwrap());
    let (store, mut table) = lagging(&reader);
    let k = keys();
    // The leader stores the new key (a delta to version 2), then acks.
    let delta = encode_delta(KS, 1, 2, &[FeedOp::Upsert(holding(&fresh, "memory:write"))]);
    assert!(sync::publish_delta(&store.store, &k, &delta, 20).is_some());
    let policy = policy();
    assert!(lifts(&policy, &table, &fresh), "unknown well-formed key");
    let recheck = Recheck::new(k);
    store.reads.set(0);
    assert_eq!(recheck.catch_up(&store, &mut table), Some(20));
    assert!(matches!(
        decide(&policy, &table, &fresh),
        Decision::Allow(_)
    ));
    // Now as new as the head: one read, nothing done.
    store.reads.set(0);
    assert_eq!(recheck.catch_up(&store, &mut table), None);
    assert_eq!(store.reads.get(), 1);
}

#[test]
fn a_widened_scope_and_another_key_set_are_caught_up_too() {
    let reader = key::generate("rk", Environment::Live).unwrap();
    let (store, mut table) = lagging(&reader);
    let policy = policy();
    assert!(lifts(&policy, &table, &reader), "a missing scope");
    let widened = encode_delta(
        KS,
        1,
        2,
        &[FeedOp::Upsert(holding(&reader, "memory:read memory:write"))],
    );
    sync::publish_delta(&store.store, &keys(), &widened, 20);
    let recheck = Recheck::new(keys());
    assert!(recheck.catch_up(&store, &mut table).is_some());
    assert!(matches!(
        decide(&policy, &table, &reader),
        Decision::Allow(_)
    ));

    // The control plane's database was replaced: a snapshot of another key
    // set at a lower version still replaces the table.
    let other = KeySet([9; 16]);
    let body = snapshot(other, 1, &[holding(&reader, "memory:read")]);
    publish_body(&store.store, &keys(), &body, 30);
    assert_eq!(recheck.catch_up(&store, &mut table), Some(30));
    assert_eq!(table.as_ref().map(KeyTable::key_set), Some(other));
}

#[test]
fn refusals_no_change_could_lift_cost_nothing() {
    let reader = key::generate("rk", Environment::Live).unwrap();
    let (store, mut table) = lagging(&reader);
    let policy = policy();
    assert!(!lifts(&policy, &table, "rk_live_not-a-key"), "malformed");
    let headers = [(":method", "POST"), (":path", "/memory")];
    let missing = match policy.decide(table.as_ref(), &Request::from_headers(&headers), NOW) {
        Decision::Deny(d) => d,
        Decision::Allow(_) => panic!("allowed without a key"),
    };
    assert!(!may_lift(
        &policy,
        &Request::from_headers(&headers),
        &missing
    ));
    // A member without a table, or a store without a head, reads nothing more.
    let recheck = Recheck::new(keys());
    store.reads.set(0);
    assert_eq!(recheck.catch_up(&store, &mut None), None);
    assert_eq!(store.reads.get(), 0);
    assert_eq!(recheck.catch_up(&Counting::default(), &mut table), None);
}
