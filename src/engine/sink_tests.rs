//! The table-direct mode: the fetch loop building the table itself.

use super::*;
use crate::engine::fetch::{Failure, Fetcher, Outcome};
use crate::feed::test_entry as entry;
use crate::feed::{encode_delta, encode_snapshot, encode_snapshot_page, FeedOp};

const KS: KeySet = KeySet([7; 16]);

/// One answer into `table`: the outcome and the new table, if any.
fn answer(
    fetcher: &mut Fetcher<TablePaging>,
    table: Option<&KeyTable>,
    status: Option<u16>,
    body: &[u8],
    now_ms: u64,
) -> (Outcome, Option<KeyTable>) {
    let mut sink = TableSink::new(table);
    let outcome = fetcher.on_answer(&mut sink, status, body, now_ms);
    (outcome, sink.into_table())
}

fn have(table: Option<&KeyTable>) -> Option<(u64, KeySet)> {
    table.map(|t| (t.version(), t.key_set()))
}

#[test]
fn snapshot_then_delta_then_long_poll() {
    let mut fetcher = Fetcher::new(50, 1000);
    let ask = fetcher.ask_from(None);
    assert_eq!(ask.since, 0);
    fetcher.started(1, &ask, 0);
    assert!(!fetcher.due(0));
    assert!(fetcher.finish(1));
    let body = encode_snapshot(KS, 5, &[entry(1), entry(2)]);
    let (outcome, table) = answer(&mut fetcher, None, Some(200), &body, 10);
    assert_eq!(
        outcome,
        Outcome::Snapshot {
            version: 5,
            keys: 2
        }
    );
    let table = table.unwrap();
    assert_eq!((table.version(), table.len()), (5, 2));
    let ask = fetcher.ask_from(have(Some(&table)));
    assert_eq!((ask.since, ask.key_set), (5, Some(KS)));
    let delta = encode_delta(KS, 5, 6, &[FeedOp::Remove([1; 32])]);
    let (outcome, next) = answer(&mut fetcher, Some(&table), Some(200), &delta, 20);
    assert_eq!(outcome, Outcome::Delta { version: 6, ops: 1 });
    let next = next.unwrap();
    assert_eq!((next.version(), next.len()), (6, 1));
    assert!(next.get(&[1; 32]).is_none());
    assert!(table.get(&[1; 32]).is_some(), "the old table is untouched");
    let (outcome, none) = answer(&mut fetcher, Some(&next), Some(304), &[], 30);
    assert_eq!(outcome, Outcome::NotModified);
    assert!(none.is_none());
}

#[test]
fn pages_are_assembled_in_order() {
    let mut fetcher = Fetcher::new(50, 1000);
    let first = encode_snapshot_page(KS, 3, &[entry(1), entry(2)], true);
    let (outcome, none) = answer(&mut fetcher, None, Some(200), &first, 0);
    assert_eq!(outcome, Outcome::Page { pages: 1, keys: 2 });
    assert!(none.is_none());
    let ask = fetcher.ask_from(None);
    assert_eq!((ask.since, ask.after), (0, Some([2; 32])));
    let last = encode_snapshot_page(KS, 4, &[entry(3)], false);
    let (_, table) = answer(&mut fetcher, None, Some(200), &last, 1);
    let table = table.unwrap();
    assert_eq!((table.version(), table.len()), (3, 3));
}

#[test]
fn a_page_of_another_key_set_starts_over() {
    let mut fetcher = Fetcher::new(50, 1000);
    let first = encode_snapshot_page(KS, 3, &[entry(1)], true);
    answer(&mut fetcher, None, Some(200), &first, 0);
    let other = KeySet([9; 16]);
    let second = encode_snapshot_page(other, 3, &[entry(2)], false);
    let (outcome, none) = answer(&mut fetcher, None, Some(200), &second, 1);
    assert_eq!(outcome, Outcome::NewKeySet { key_set: other });
    assert!(none.is_none());
    assert!(fetcher.due(1), "the first page is asked for at once");
    assert_eq!(fetcher.ask_from(None).after, None);
}

#[test]
fn a_delta_that_does_not_fit_asks_for_a_snapshot_at_once() {
    let mut fetcher = Fetcher::new(50, 1000);
    let body = encode_snapshot(KS, 5, &[entry(1)]);
    let (_, table) = answer(&mut fetcher, None, Some(200), &body, 0);
    let table = table.unwrap();
    let other = encode_delta(KeySet([9; 16]), 5, 6, &[]);
    let (outcome, none) = answer(&mut fetcher, Some(&table), Some(200), &other, 1);
    assert_eq!(
        outcome,
        Outcome::Resync {
            base: 5,
            have: Some(5)
        }
    );
    assert!(none.is_none());
    assert!(fetcher.due(1));
    assert_eq!(fetcher.ask_from(have(Some(&table))).since, 0);
}

#[test]
fn failures_retry_later_and_keep_nothing() {
    let mut fetcher = Fetcher::new(50, 1000);
    let (outcome, _) = answer(&mut fetcher, None, None, &[], 100);
    assert_eq!(outcome, Outcome::Failed(Failure::NoResponse));
    assert!(!fetcher.due(500));
    fetcher.hurry(250);
    assert!(!fetcher.due(300) && fetcher.due(350));
    assert!(fetcher.due(1100));
    let (outcome, none) = answer(&mut fetcher, None, Some(200), b"garbage", 1100);
    assert!(matches!(outcome, Outcome::Failed(Failure::Garbage(_))));
    assert!(none.is_none());
}
