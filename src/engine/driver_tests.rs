//! Members of one process sharing a store, against a fake host.

use super::*;
use crate::config::FilterConfig;
use crate::engine::fetch_log::FAILURES_LOGGED_EVERY;
use crate::engine::shared::{MemoryShared, SharedData};
use crate::engine::sync::tests::{entry, KS};
use crate::feed::{encode_delta, encode_snapshot, encode_snapshot_page, FeedOp};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

/// One process: a store, a clock, every call started and every log line.
#[derive(Default)]
struct Process {
    store: MemoryShared,
    now: Cell<u64>,
    calls: RefCell<Vec<FeedRequest>>,
    lines: RefCell<Vec<(Level, String)>>,
    /// Calls fail to start.
    no_cluster: Cell<bool>,
}

/// A member's view of the process.
#[derive(Clone)]
struct Fake(Rc<Process>);

impl SharedData for Fake {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        self.0.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.0.store.set(key, value, cas)
    }
}

impl Host for Fake {
    fn now_ms(&self) -> u64 {
        self.0.now.get()
    }

    fn dispatch(&self, request: &FeedRequest) -> Option<u32> {
        if self.0.no_cluster.get() {
            return None;
        }
        let mut calls = self.0.calls.borrow_mut();
        calls.push(request.clone());
        u32::try_from(calls.len()).ok()
    }

    fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        self.0.lines.borrow_mut().push((level, message.to_string()));
    }
}

impl Fake {
    fn at(&self, now: u64) -> &Fake {
        self.0.now.set(now);
        self
    }

    /// The last call started: its token and path.
    fn last_call(&self) -> (u32, String) {
        let calls = self.0.calls.borrow();
        let path = calls.last().map(|c| c.path.clone()).unwrap_or_default();
        (u32::try_from(calls.len()).unwrap_or(0), path)
    }

    fn logged(&self, part: &str) -> usize {
        let lines = self.0.lines.borrow();
        lines.iter().filter(|(_, l)| l.contains(part)).count()
    }
}

fn feed() -> FeedConfig {
    let json = br#"{"feed":{"cluster":"cp","wait_seconds":20,"max_staleness_seconds":300,"sync_interval_ms":100}}"#;
    FilterConfig::from_json_with_env(json, |_| Some("token".into()))
        .unwrap()
        .feed
}

const SERVES: Member = Member {
    serves: true,
    waiting: false,
};
const IDLE: Member = Member {
    serves: false,
    waiting: false,
};

fn answer(body: Vec<u8>) -> impl FnOnce() -> (Option<u16>, Vec<u8>) {
    move || (Some(200), body)
}

#[test]
fn the_first_member_leads_and_the_others_follow_through_the_store() {
    let host = Fake(Rc::default());
    let mut main = Engine::new(host.at(0), feed(), 1);
    let mut worker = Engine::new(host.at(1), feed(), 2);
    let (mut main_table, mut worker_table) = (None, None);
    main.tick(host.at(10), &mut main_table, IDLE);
    worker.tick(host.at(10), &mut worker_table, SERVES);
    assert!(!main.leads(), "nobody claims before the grace period");
    assert!(host.0.calls.borrow().is_empty());
    main.tick(host.at(CLAIM_GRACE_MS), &mut main_table, IDLE);
    worker.tick(host.at(CLAIM_GRACE_MS), &mut worker_table, SERVES);
    assert!(main.leads() && !worker.leads());
    let (token, path) = host.last_call();
    println!("leader asks {path}");
    assert!(path.starts_with("/v1/key-table?since=0&wait=20&client="));
    let body = encode_snapshot(KS, 5, &[entry(1), entry(2)]);
    let changes = main.on_response(host.at(250), &mut main_table, IDLE, token, answer(body));
    assert_eq!((changes.fetched, changes.table), (1, false));
    assert!(main_table.is_none(), "the leader serves nothing: no table");
    let changes = worker.tick(host.at(300), &mut worker_table, SERVES);
    assert!(changes.table);
    assert_eq!(changes.contact_ms, Some(250));
    assert_eq!(worker_table.as_ref().map(KeyTable::version), Some(5));
    assert_eq!(
        host.logged("first key table (version 5, 2 keys) loaded 299 ms"),
        1
    );
    assert_eq!(
        host.logged("key table version 5 fetched (2 keys, snapshot)"),
        1
    );
}

#[test]
fn a_serving_leader_keeps_the_table_it_fetches_and_deltas_extend_it() {
    let host = Fake(Rc::default());
    let mut alone = Engine::new(host.at(0), feed(), 1);
    let mut table = None;
    alone.tick(host.at(CLAIM_GRACE_MS), &mut table, SERVES);
    let (token, _) = host.last_call();
    let snapshot = encode_snapshot(KS, 5, &[entry(1)]);
    let changes = alone.on_response(&host, &mut table, SERVES, token, answer(snapshot));
    assert!(changes.table);
    alone.tick(host.at(400), &mut table, SERVES);
    let (token, path) = host.last_call();
    assert!(path.contains("since=5&wait=20&key_set="), "{path}");
    let delta = encode_delta(KS, 5, 6, &[FeedOp::Upsert(entry(2))]);
    let changes = alone.on_response(host.at(450), &mut table, SERVES, token, answer(delta));
    assert!(changes.table);
    assert_eq!(table.as_ref().map(|t| (t.version(), t.len())), Some((6, 2)));
}

#[test]
fn a_waiting_member_fetches_its_own_first_table_without_a_long_poll() {
    let host = Fake(Rc::default());
    let mut worker = Engine::new(host.at(0), feed(), 1);
    let mut table = None;
    let waiting = Member {
        serves: true,
        waiting: true,
    };
    worker.tick(host.at(5), &mut table, waiting);
    let (token, path) = host.last_call();
    assert_eq!(path, "/v1/key-table?since=0&wait=0", "no wait, no client");
    let body = encode_snapshot(KS, 3, &[entry(1)]);
    let changes = worker.on_response(host.at(20), &mut table, waiting, token, answer(body));
    assert_eq!(changes.contact_ms, Some(20));
    assert!(changes.table && changes.fetched == 1);
    assert_eq!(host.logged("fetched by this VM directly"), 1);
}

#[test]
fn a_shared_table_ends_the_members_own_fetch_before_it_loads() {
    let host = Fake(Rc::default());
    let mut main = Engine::new(host.at(0), feed(), 1);
    let mut worker = Engine::new(host.at(0), feed(), 2);
    let (mut main_table, mut table) = (None, None);
    let waiting = Member {
        serves: true,
        waiting: true,
    };
    main.tick(host.at(10), &mut main_table, IDLE);
    worker.tick(host.at(10), &mut table, waiting);
    let (own, _) = host.last_call();
    let first = encode_snapshot_page(KS, 3, &[entry(1)], true);
    worker.on_response(host.at(20), &mut table, waiting, own, answer(first));
    let (own, path) = host.last_call();
    assert!(path.contains("wait=0&after="), "{path}");
    main.tick(host.at(CLAIM_GRACE_MS), &mut main_table, IDLE);
    let (lead, _) = host.last_call();
    let shared = encode_snapshot(KS, 5, &[entry(1), entry(2)]);
    main.on_response(host.at(210), &mut main_table, IDLE, lead, answer(shared));
    // A request arrives: the member loads the shared table, and its own
    // half-built one is gone (not kept beside it).
    let changes = worker.follow(host.at(220), &mut table);
    assert!(changes.table);
    assert_eq!(table.as_ref().map(KeyTable::version), Some(5));
    let last = encode_snapshot_page(KS, 3, &[entry(2)], false);
    let changes = worker.on_response(host.at(230), &mut table, waiting, own, answer(last));
    assert_eq!((changes.fetched, changes.table), (0, false), "not read");
    assert_eq!(host.logged("fetched by this VM directly"), 0);
}

#[test]
fn answers_to_other_calls_are_not_read() {
    let host = Fake(Rc::default());
    let mut engine = Engine::new(host.at(0), feed(), 1);
    let mut table = None;
    let read = Cell::new(false);
    let changes = engine.on_response(&host, &mut table, SERVES, 9, || {
        read.set(true);
        (Some(200), Vec::new())
    });
    assert_eq!(changes, Changes::default());
    assert!(!read.get());
}

#[test]
fn failures_are_counted_logged_sparingly_and_the_recovery_once() {
    let host = Fake(Rc::default());
    host.0.no_cluster.set(true);
    let mut engine = Engine::new(host.at(0), feed(), 1);
    let mut table = None;
    let mut failed = 0;
    let mut now = CLAIM_GRACE_MS;
    for _ in 0..FAILURES_LOGGED_EVERY {
        failed += engine.tick(host.at(now), &mut table, IDLE).failed;
        now += u64::from(feed().retry_ms);
    }
    assert_eq!(failed, FAILURES_LOGGED_EVERY);
    assert_eq!(
        host.logged("could not be dispatched"),
        2,
        "the first and the 60th"
    );
    host.0.no_cluster.set(false);
    engine.tick(host.at(now), &mut table, IDLE);
    let (token, _) = host.last_call();
    let body = encode_snapshot(KS, 1, &[entry(1)]);
    engine.on_response(&host, &mut table, IDLE, token, answer(body));
    assert_eq!(host.logged("works again after 60 failures"), 1);
}

#[test]
fn the_wait_is_lowered_to_a_quarter_of_the_staleness() {
    let host = Fake(Rc::default());
    let mut config = feed();
    config.max_staleness_seconds = 40;
    let engine = Engine::new(host.at(0), config, 1);
    assert_eq!(engine.config().wait_seconds, 10);
    assert_eq!(host.logged("long-poll wait lowered from 20 s to 10 s"), 1);
}

#[test]
fn a_stopped_leader_hands_over_at_once() {
    let host = Fake(Rc::default());
    let mut first = Engine::new(host.at(0), feed(), 1);
    let mut second = Engine::new(host.at(0), feed(), 2);
    let (mut a, mut b) = (None, None);
    first.tick(host.at(CLAIM_GRACE_MS), &mut a, IDLE);
    second.tick(host.at(CLAIM_GRACE_MS), &mut b, IDLE);
    assert!(first.leads() && !second.leads());
    first.stop(&host);
    second.tick(host.at(CLAIM_GRACE_MS + 100), &mut b, IDLE);
    assert!(
        second.leads(),
        "no candidate left: the follower takes the free lease"
    );
}
