//! Feed bodies (`keygate::feed`, `keygate::table`). The input is a run of
//! bodies, each starting at the codec's magic (`KGT3`) (bytes before the first one are a
//! body too). Pages of a snapshot go through `check_snapshot_page` and a
//! `SnapshotBuilder`; whole snapshots and deltas through `table::decode`,
//! deltas then through `KeyTable::apply` (again with the table's own base if
//! theirs did not match). The table is checked against a model built from
//! the same bytes with the codec's `Reader`: same keys (matched on the
//! 16-byte hash prefix), same fields (status, own limits and owner
//! included), same count, version as announced; a
//! refused delta (another base or another key set) changes nothing. Only the public decode API is used.

#![no_main]

use keygate::feed::{check_snapshot_page, KeyStatus, RawEntry, RawOp, Reader, MAGIC};
use keygate::limits::RateLimits;
use keygate::table::{decode, KeyTable, SnapshotBuilder, Update};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

/// What the table must answer for one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    key_id: u64,
    org_id: u64,
    expires_at: u64,
    scopes: String,
    tier: String,
    test: bool,
    status: KeyStatus,
    limits: RateLimits,
    external_id: Option<String>,
}

type Model = HashMap<[u8; 16], Expected>;

/// A body read with the codec's `Reader`.
struct Parsed<'a> {
    snapshot: bool,
    more: bool,
    version: u64,
    dictionary: Vec<&'a str>,
    ops: Vec<RawOp>,
}

fn parse(body: &[u8]) -> Option<Parsed<'_>> {
    let (header, mut reader) = Reader::header(body).ok()?;
    let dictionary = reader.dictionary().ok()?;
    let n = reader.op_count().ok()?;
    let mut ops = Vec::new();
    for _ in 0..n {
        ops.push(reader.op().ok()?);
    }
    reader.finish().ok()?;
    Some(Parsed {
        snapshot: header.snapshot,
        more: header.more,
        version: header.version,
        dictionary,
        ops,
    })
}

fn prefix(hash: &[u8; 32]) -> [u8; 16] {
    let mut p = [0; 16];
    p.copy_from_slice(&hash[..16]);
    p
}

fn expected(e: &RawEntry, dictionary: &[&str]) -> Expected {
    let text = |i: u32| dictionary[i as usize].to_string();
    Expected {
        key_id: e.key_id,
        org_id: e.org_id,
        expires_at: e.expires_at.min(u64::from(u32::MAX)),
        scopes: text(e.scopes),
        tier: text(e.tier),
        test: e.environment == keygate::key::Environment::Test,
        status: e.status,
        limits: e.limits,
        external_id: e.external_id.map(text),
    }
}

/// Applies a body's ops to the model, in order.
fn update(model: &mut Model, parsed: &Parsed<'_>) {
    for op in &parsed.ops {
        match op {
            RawOp::Upsert(e) => {
                model.insert(prefix(&e.hash), expected(e, &parsed.dictionary));
            }
            RawOp::Remove(hash) => {
                model.remove(&prefix(hash));
            }
        }
    }
}

/// What the table answers for `hash`.
fn lookup(table: &KeyTable, hash: &[u8; 32]) -> Option<Expected> {
    table.get(hash).map(|r| Expected {
        key_id: r.key_id.0,
        org_id: r.org_id.0,
        expires_at: r.expires_at,
        scopes: r.scopes.to_string(),
        tier: r.tier.to_string(),
        test: r.environment == keygate::key::Environment::Test,
        status: r.status,
        limits: r.limits,
        external_id: r.external_id.map(str::to_string),
    })
}

/// The table holds exactly the model: count, and every probed hash.
fn check(table: &KeyTable, model: &Model, probes: &[[u8; 32]]) {
    assert_eq!(table.len(), model.len(), "live key count");
    for hash in probes {
        assert_eq!(
            lookup(table, hash),
            model.get(&prefix(hash)).cloned(),
            "key {hash:02x?}"
        );
    }
    for p in model.keys() {
        let mut hash = [0xa5; 32];
        hash[..16].copy_from_slice(p);
        assert!(table.get(&hash).is_some(), "a key is matched on its prefix");
    }
}

/// Two tables answer the same (a refused delta changed nothing).
fn same(a: &KeyTable, b: &KeyTable, probes: &[[u8; 32]]) {
    assert_eq!((a.version(), a.len()), (b.version(), b.len()));
    for hash in probes {
        assert_eq!(lookup(a, hash), lookup(b, hash));
    }
}

/// Splits the input before every magic.
fn bodies(data: &[u8]) -> Vec<&[u8]> {
    let mut starts: Vec<usize> = (1..data.len())
        .filter(|&i| data[i..].starts_with(MAGIC))
        .collect();
    starts.insert(0, 0);
    starts.push(data.len());
    starts
        .windows(2)
        .map(|w| &data[w[0]..w[1]])
        .filter(|b| !b.is_empty())
        .collect()
}

/// A snapshot arriving in pages.
struct Pages {
    builder: SnapshotBuilder,
    model: Model,
    after: Option<[u8; 32]>,
    version: u64,
}

impl Pages {
    fn new() -> Pages {
        Pages {
            builder: SnapshotBuilder::new(64),
            model: Model::new(),
            after: None,
            version: u64::MAX,
        }
    }

    /// Adds a page; the table once the last one came, `Err` once refused.
    fn add(&mut self, body: &[u8], parsed: Option<&Parsed<'_>>) -> Result<Option<KeyTable>, ()> {
        let checked = check_snapshot_page(body, self.after.as_ref());
        if self.builder.add_page(body).is_err() {
            return Err(());
        }
        // The builder is the stricter: what it takes, the check takes.
        let summary = checked.expect("a page the builder took passes the check");
        let parsed = parsed.expect("a page the builder took parses");
        assert_eq!(
            (summary.keys, summary.more),
            (parsed.ops.len(), parsed.more)
        );
        update(&mut self.model, parsed);
        self.after = summary.last_hash.or(self.after);
        self.version = self.version.min(parsed.version);
        if !self.builder.is_complete() {
            return Ok(None);
        }
        let builder = std::mem::replace(&mut self.builder, SnapshotBuilder::new(0));
        let table = builder.finish().expect("a complete snapshot builds");
        assert_eq!(table.version(), self.version);
        Ok(Some(table))
    }
}

fuzz_target!(|data: &[u8]| {
    let bodies = bodies(data);
    let parsed: Vec<Option<Parsed<'_>>> = bodies.iter().map(|b| parse(b)).collect();
    let mut probes: Vec<[u8; 32]> = parsed
        .iter()
        .flatten()
        .flat_map(|p| &p.ops)
        .map(|op| match op {
            RawOp::Upsert(e) => e.hash,
            RawOp::Remove(h) => *h,
        })
        .collect();
    probes.push([0; 32]);
    let mut table: Option<(KeyTable, Model)> = None;
    let mut pages: Option<Pages> = None;
    for (body, parsed) in bodies.iter().zip(&parsed) {
        let is_page = parsed.as_ref().is_some_and(|p| p.snapshot && p.more);
        if is_page || (pages.is_some() && parsed.as_ref().is_some_and(|p| p.snapshot)) {
            let building = pages.get_or_insert_with(Pages::new);
            match building.add(body, parsed.as_ref()) {
                Ok(Some(t)) => {
                    let model = std::mem::take(&mut building.model);
                    check(&t, &model, &probes);
                    table = Some((t, model));
                    pages = None;
                }
                Ok(None) => {}
                Err(()) => pages = None,
            }
            continue;
        }
        match decode(body) {
            Ok(Update::Snapshot(t)) => {
                let parsed = parsed.as_ref().expect("a decoded snapshot parses");
                assert!(check_snapshot_page(body, None).is_ok());
                let mut model = Model::new();
                update(&mut model, parsed);
                assert_eq!(t.version(), parsed.version);
                check(&t, &model, &probes);
                table = Some((*t, model));
            }
            Ok(Update::Delta(mut delta)) => {
                let parsed = parsed.as_ref().expect("a decoded delta parses");
                assert_eq!(delta.len(), parsed.ops.len());
                let Some((t, model)) = table.as_mut() else {
                    continue;
                };
                if delta.base != t.version() {
                    let before = t.clone();
                    assert!(
                        t.apply(&delta).is_err(),
                        "a delta from another base is refused"
                    );
                    same(&before, t, &probes);
                    delta.base = t.version();
                }
                let before = t.clone();
                match t.apply(&delta) {
                    Ok(()) => {
                        update(model, parsed);
                        assert_eq!(t.version(), delta.version);
                        check(t, model, &probes);
                    }
                    Err(_) => same(&before, t, &probes),
                }
            }
            Err(_) => {}
        }
    }
});
