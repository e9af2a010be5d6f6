//! The key table feed codec (`KGT3`, see docs/feed-protocol.md).
//!
//! The control plane encodes snapshots (whole, or in pages of keys in hash
//! order) and deltas; the filter checks and decodes them into a
//! [`KeyTable`](crate::table::KeyTable). Every body names its [`KeySet`]:
//! versions only mean something within one key set's history. Decoding is
//! bounds-checked: any byte string gives an update or an error, never a panic.

use crate::ids::{KeyId, OrgId};
use crate::key::Environment;
use crate::limits::RateLimits;
use std::collections::HashMap;
use std::fmt;

/// First bytes of every body.
pub const MAGIC: &[u8; 4] = b"KGT3";
/// Keys per snapshot page the control plane sends unless configured
/// otherwise (about 1.1 MB a page).
pub const DEFAULT_PAGE_KEYS: u32 = 16_384;
/// Content type of a feed body.
pub const CONTENT_TYPE: &str = "application/x-keygate-table";
const KIND_SNAPSHOT: u8 = 1;
/// Body kind of a delta.
pub const KIND_DELTA: u8 = 2;
/// Body kind of a snapshot page with more pages to follow.
pub const KIND_PAGE: u8 = 3;
/// Fewest bytes of one upsert op on the wire (a key without own limits or
/// owner).
pub const UPSERT_BYTES: usize = 68;
const OP_UPSERT: u8 = 1;
const OP_REMOVE: u8 = 2;
/// Upsert `extras` bit: `per_minute u32, per_day u32` follow.
const EXTRA_LIMITS: u8 = 1;
/// Upsert `extras` bit: the owner's dictionary index (`u32`) follows.
const EXTRA_OWNER: u8 = 2;
/// Longest `external_id` (the key's owner), in bytes.
pub const MAX_EXTERNAL_ID: usize = 128;

/// True for an `external_id` a key may carry: 1 to 128 visible ASCII
/// characters (no space or control character), so it is a valid header value.
pub fn is_valid_external_id(text: &str) -> bool {
    (1..=MAX_EXTERNAL_ID).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())
}

/// What a key in the table may do besides its scopes: the decision refuses
/// every status but `Active` (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyStatus {
    #[default]
    Active,
    /// Its tenant is suspended by the operator: 403.
    OrgSuspended,
    /// Its request quota is used up: 402.
    QuotaExhausted,
    /// Its spending cap is used up: 402.
    SpendExhausted,
}

impl KeyStatus {
    /// Every status, in wire order.
    pub const ALL: [KeyStatus; 4] = [
        KeyStatus::Active,
        KeyStatus::OrgSuspended,
        KeyStatus::QuotaExhausted,
        KeyStatus::SpendExhausted,
    ];

    /// The status' byte on the wire (also its 2 bits in the table).
    pub fn code(self) -> u8 {
        match self {
            KeyStatus::Active => 0,
            KeyStatus::OrgSuspended => 1,
            KeyStatus::QuotaExhausted => 2,
            KeyStatus::SpendExhausted => 3,
        }
    }

    /// The status of a wire byte; `None` for an unknown one.
    pub fn from_code(code: u8) -> Option<KeyStatus> {
        KeyStatus::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// The identity of one key set's history: 128 random bits made when its
/// database is created. Two databases never share one, so a version number
/// is only compared with versions of the same key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct KeySet(pub [u8; 16]);

impl KeySet {
    /// A fresh id from the OS CSPRNG.
    #[cfg(feature = "generate")]
    pub fn random() -> Result<KeySet, crate::key::KeyError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| crate::key::KeyError::Random)?;
        Ok(KeySet(bytes))
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<KeySet> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(KeySet(bytes))
    }
}

impl fmt::Display for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One key as the feed carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedEntry {
    /// SHA-256 of the full key.
    pub hash: [u8; 32],
    pub key_id: KeyId,
    pub org_id: OrgId,
    /// Unix seconds; 0 = never expires.
    pub expires_at: u64,
    /// Space-separated scopes.
    pub scopes: String,
    pub tier: String,
    pub environment: Environment,
    pub status: KeyStatus,
    /// The key's own limits (none by default).
    pub limits: RateLimits,
    /// The key's owner, forwarded as `x-key-owner` ([`is_valid_external_id`]).
    pub external_id: Option<String>,
}

/// One change in a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedOp {
    Upsert(FeedEntry),
    Remove([u8; 32]),
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// The body ended early or has bytes past its end.
    Truncated,
    /// Not a `KGT3` body.
    Magic,
    /// Unknown body kind or op tag.
    Tag(u8),
    /// A string is not UTF-8.
    Utf8,
    /// A dictionary index is out of range, or too many distinct values.
    Dictionary,
    /// A delta's base is not the table's version.
    BaseMismatch { base: u64, have: u64 },
    /// A snapshot holds an op other than upsert.
    RemoveInSnapshot,
    /// Snapshot keys are not in strictly ascending hash order (after the
    /// previous page's last key).
    Order,
    /// A snapshot page that announces more pages holds no key.
    EmptyPage,
    /// A body of another key set than the table (or the pages before it).
    KeySet { body: KeySet, have: KeySet },
    /// An owner that is not a valid `external_id`.
    ExternalId,
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::Truncated => f.write_str("truncated or oversized body"),
            FeedError::Magic => f.write_str("not a KGT3 body"),
            FeedError::Tag(t) => write!(f, "unknown tag {t}"),
            FeedError::Utf8 => f.write_str("string is not UTF-8"),
            FeedError::Dictionary => f.write_str("bad dictionary index"),
            FeedError::BaseMismatch { base, have } => {
                write!(f, "delta from version {base} but the table is at {have}")
            }
            FeedError::RemoveInSnapshot => f.write_str("remove op in a snapshot"),
            FeedError::Order => f.write_str("snapshot keys not in ascending hash order"),
            FeedError::EmptyPage => f.write_str("empty snapshot page before the last"),
            FeedError::KeySet { body, have } => {
                write!(
                    f,
                    "body of key set {body} but the table is of key set {have}"
                )
            }
            FeedError::ExternalId => f.write_str("owner is not a valid external_id"),
        }
    }
}

impl std::error::Error for FeedError {}

/// Encodes the whole table of `key_set` at `version` in one body (keys in
/// hash order).
pub fn encode_snapshot(key_set: KeySet, version: u64, entries: &[FeedEntry]) -> Vec<u8> {
    encode_snapshot_page(key_set, version, entries, false)
}

/// Encodes one page of a snapshot of `key_set` read at `version`, keys in
/// hash order; `more` when further pages follow (the last page, or a whole
/// snapshot, has `more == false`).
pub fn encode_snapshot_page(
    key_set: KeySet,
    version: u64,
    entries: &[FeedEntry],
    more: bool,
) -> Vec<u8> {
    let mut sorted: Vec<&FeedEntry> = entries.iter().collect();
    sorted.sort_unstable_by_key(|e| e.hash);
    let ops = sorted.into_iter().map(OpRef::Upsert);
    let header = Header {
        snapshot: true,
        more,
        key_set,
        base: 0,
        version,
    };
    encode(&header, ops, entries.len())
}

/// Encodes the changes that move a table of `key_set` from `base` to `version`.
pub fn encode_delta(key_set: KeySet, base: u64, version: u64, ops: &[FeedOp]) -> Vec<u8> {
    let refs = ops.iter().map(|op| match op {
        FeedOp::Upsert(e) => OpRef::Upsert(e),
        FeedOp::Remove(h) => OpRef::Remove(h),
    });
    let header = Header {
        snapshot: false,
        more: false,
        key_set,
        base,
        version,
    };
    encode(&header, refs, ops.len())
}

enum OpRef<'a> {
    Upsert(&'a FeedEntry),
    Remove(&'a [u8; 32]),
}

fn encode<'a>(
    header: &Header,
    ops: impl Iterator<Item = OpRef<'a>> + Clone,
    count: usize,
) -> Vec<u8> {
    let mut dict: HashMap<&str, u32> = HashMap::new();
    let mut strings: Vec<&str> = Vec::new();
    let mut intern = |s: &'a str| -> u32 {
        *dict.entry(s).or_insert_with(|| {
            strings.push(s);
            u32::try_from(strings.len() - 1).unwrap_or(u32::MAX)
        })
    };
    let mut body = Vec::with_capacity(count * UPSERT_BYTES);
    for op in ops {
        match op {
            OpRef::Upsert(e) => {
                body.push(OP_UPSERT);
                body.extend_from_slice(&e.hash);
                body.extend_from_slice(&e.key_id.0.to_le_bytes());
                body.extend_from_slice(&e.org_id.0.to_le_bytes());
                body.extend_from_slice(&e.expires_at.to_le_bytes());
                body.extend_from_slice(&intern(&e.scopes).to_le_bytes());
                body.extend_from_slice(&intern(&e.tier).to_le_bytes());
                body.push(match e.environment {
                    Environment::Live => 0,
                    Environment::Test => 1,
                });
                body.push(e.status.code());
                let owner = e.external_id.as_deref();
                let extras = if e.limits.is_none() { 0 } else { EXTRA_LIMITS }
                    | if owner.is_some() { EXTRA_OWNER } else { 0 };
                body.push(extras);
                if extras & EXTRA_LIMITS != 0 {
                    body.extend_from_slice(&e.limits.per_minute.to_le_bytes());
                    body.extend_from_slice(&e.limits.per_day.to_le_bytes());
                }
                if let Some(owner) = owner {
                    body.extend_from_slice(&intern(owner).to_le_bytes());
                }
            }
            OpRef::Remove(hash) => {
                body.push(OP_REMOVE);
                body.extend_from_slice(hash);
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(MAGIC);
    out.push(match (header.snapshot, header.more) {
        (false, _) => KIND_DELTA,
        (true, true) => KIND_PAGE,
        (true, false) => KIND_SNAPSHOT,
    });
    out.extend_from_slice(&header.key_set.0);
    out.extend_from_slice(&header.base.to_le_bytes());
    out.extend_from_slice(&header.version.to_le_bytes());
    out.extend_from_slice(&len_u32(strings.len()).to_le_bytes());
    for s in &strings {
        let bytes = s
            .get(..s.len().min(usize::from(u16::MAX)))
            .unwrap_or("")
            .as_bytes();
        out.extend_from_slice(&len_u16(bytes.len()).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&len_u32(count).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn len_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A decoded upsert whose strings are indices into the body's dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntry {
    pub hash: [u8; 32],
    pub key_id: u64,
    pub org_id: u64,
    pub expires_at: u64,
    pub scopes: u32,
    pub tier: u32,
    pub environment: Environment,
    pub status: KeyStatus,
    pub limits: RateLimits,
    /// Dictionary index of the owner, if the key has one.
    pub external_id: Option<u32>,
}

impl RawEntry {
    /// True when every dictionary index is below `strings`.
    pub fn indices_below(&self, strings: usize) -> bool {
        let below = |i: u32| (i as usize) < strings;
        below(self.scopes) && below(self.tier) && self.external_id.is_none_or(below)
    }
}

/// A decoded op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawOp {
    Upsert(RawEntry),
    Remove([u8; 32]),
}

/// The fixed part of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// A snapshot or one page of it.
    pub snapshot: bool,
    /// A snapshot page with more pages to follow.
    pub more: bool,
    /// The key set whose history `base` and `version` belong to.
    pub key_set: KeySet,
    pub base: u64,
    pub version: u64,
}

/// A bounds-checked reader over a body.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FeedError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(FeedError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FeedError> {
        self.take(N)?.try_into().map_err(|_| FeedError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, FeedError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, FeedError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FeedError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FeedError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads magic, kind, key set, base and version.
    pub fn header(bytes: &'a [u8]) -> Result<(Header, Self), FeedError> {
        let mut r = Reader { rest: bytes };
        if r.take(4).map_err(|_| FeedError::Magic)? != MAGIC {
            return Err(FeedError::Magic);
        }
        let (snapshot, more) = match r.u8()? {
            KIND_SNAPSHOT => (true, false),
            KIND_PAGE => (true, true),
            KIND_DELTA => (false, false),
            other => return Err(FeedError::Tag(other)),
        };
        let header = Header {
            snapshot,
            more,
            key_set: KeySet(r.array()?),
            base: r.u64()?,
            version: r.u64()?,
        };
        Ok((header, r))
    }

    /// Reads the dictionary of strings.
    pub fn dictionary(&mut self) -> Result<Vec<&'a str>, FeedError> {
        let n = self.u32()?;
        // Each string takes at least two bytes: never trust the count alone.
        let mut out = Vec::with_capacity((n as usize).min(self.rest.len() / 2));
        for _ in 0..n {
            let len = self.u16()?;
            let bytes = self.take(usize::from(len))?;
            out.push(std::str::from_utf8(bytes).map_err(|_| FeedError::Utf8)?);
        }
        Ok(out)
    }

    /// Reads the op count; the ops follow.
    pub fn op_count(&mut self) -> Result<u32, FeedError> {
        self.u32()
    }

    /// Reads one op.
    pub fn op(&mut self) -> Result<RawOp, FeedError> {
        let tag = self.u8()?;
        let hash = self.array()?;
        match tag {
            OP_REMOVE => Ok(RawOp::Remove(hash)),
            OP_UPSERT => self.upsert(hash).map(RawOp::Upsert),
            other => Err(FeedError::Tag(other)),
        }
    }

    /// Reads the rest of an upsert of `hash`.
    fn upsert(&mut self, hash: [u8; 32]) -> Result<RawEntry, FeedError> {
        let key_id = self.u64()?;
        let org_id = self.u64()?;
        let expires_at = self.u64()?;
        let scopes = self.u32()?;
        let tier = self.u32()?;
        let environment = match self.u8()? {
            0 => Environment::Live,
            1 => Environment::Test,
            other => return Err(FeedError::Tag(other)),
        };
        let status = self.u8()?;
        let status = KeyStatus::from_code(status).ok_or(FeedError::Tag(status))?;
        let extras = self.u8()?;
        if extras & !(EXTRA_LIMITS | EXTRA_OWNER) != 0 {
            return Err(FeedError::Tag(extras));
        }
        let limits = if extras & EXTRA_LIMITS != 0 {
            RateLimits {
                per_minute: self.u32()?,
                per_day: self.u32()?,
            }
        } else {
            RateLimits::NONE
        };
        let external_id = if extras & EXTRA_OWNER != 0 {
            Some(self.u32()?)
        } else {
            None
        };
        Ok(RawEntry {
            hash,
            key_id,
            org_id,
            expires_at,
            scopes,
            tier,
            environment,
            status,
            limits,
            external_id,
        })
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), FeedError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FeedError::Truncated)
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// What a well-formed snapshot page (or whole snapshot) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSummary {
    /// The key set the page belongs to.
    pub key_set: KeySet,
    /// The version the page was read at.
    pub version: u64,
    /// More pages follow.
    pub more: bool,
    /// Keys in the page.
    pub keys: usize,
    /// Hash of its last key (the next page starts after it).
    pub last_hash: Option<[u8; 32]>,
}

/// Checks a snapshot body or page without building a table: every op an
/// upsert whose strings are in the dictionary, hashes strictly ascending and
/// above `after` (the previous page's last hash), no empty page before the last.
pub fn check_snapshot_page(
    bytes: &[u8],
    after: Option<&[u8; 32]>,
) -> Result<PageSummary, FeedError> {
    let (header, mut reader) = Reader::header(bytes)?;
    if !header.snapshot {
        return Err(FeedError::Tag(KIND_DELTA));
    }
    let dictionary = reader.dictionary()?;
    let n = reader.op_count()?;
    let mut last = after.copied();
    for _ in 0..n {
        let RawOp::Upsert(e) = reader.op()? else {
            return Err(FeedError::RemoveInSnapshot);
        };
        if !e.indices_below(dictionary.len()) {
            return Err(FeedError::Dictionary);
        }
        check_external_id(&dictionary, &e)?;
        if last.is_some_and(|l| e.hash <= l) {
            return Err(FeedError::Order);
        }
        last = Some(e.hash);
    }
    reader.finish()?;
    if header.more && n == 0 {
        return Err(FeedError::EmptyPage);
    }
    Ok(PageSummary {
        key_set: header.key_set,
        version: header.version,
        more: header.more,
        keys: n as usize,
        last_hash: if n == 0 { None } else { last },
    })
}

/// Fails unless the owner `raw` names in `dictionary` (if any) is a valid
/// `external_id`; an index out of range is a `Dictionary` error.
pub fn check_external_id<S: AsRef<str>>(dictionary: &[S], raw: &RawEntry) -> Result<(), FeedError> {
    let Some(i) = raw.external_id else {
        return Ok(());
    };
    let owner = dictionary.get(i as usize).ok_or(FeedError::Dictionary)?;
    if is_valid_external_id(owner.as_ref()) {
        Ok(())
    } else {
        Err(FeedError::ExternalId)
    }
}

/// Test fixture: the entry of key `n` (hash `[n; 32]`, id `n`, org 1,
/// scope `a:b`, tier `free`), for this crate's tests.
#[cfg(test)]
pub(crate) fn test_entry(n: u8) -> FeedEntry {
    FeedEntry {
        hash: [n; 32],
        key_id: KeyId(u64::from(n)),
        org_id: OrgId(1),
        scopes: "a:b".into(),
        tier: "free".into(),
        ..FeedEntry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KS: KeySet = KeySet([7; 16]);

    use test_entry as entry;

    fn decoded(body: &[u8]) -> Vec<RawEntry> {
        let (_, mut r) = Reader::header(body).unwrap();
        r.dictionary().unwrap();
        let n = r.op_count().unwrap();
        let ops = (0..n)
            .map(|_| match r.op().unwrap() {
                RawOp::Upsert(e) => e,
                RawOp::Remove(_) => panic!("remove"),
            })
            .collect();
        r.finish().unwrap();
        ops
    }

    #[test]
    fn status_limits_and_owner_round_trip() {
        let plain = entry(1);
        let full = FeedEntry {
            status: KeyStatus::OrgSuspended,
            limits: RateLimits {
                per_minute: 5,
                per_day: 0,
            },
            external_id: Some("user-42".into()),
            ..entry(2)
        };
        let body = encode_snapshot(KS, 1, &[plain.clone(), full]);
        // The plain key costs the fixed 68 bytes; the full one 8 + 4 more.
        let ops = decoded(&body);
        assert_eq!(ops.len(), 2);
        assert_eq!(
            (ops[0].status, ops[0].limits, ops[0].external_id),
            (KeyStatus::Active, RateLimits::NONE, None)
        );
        assert_eq!(ops[1].status, KeyStatus::OrgSuspended);
        assert_eq!((ops[1].limits.per_minute, ops[1].limits.per_day), (5, 0));
        assert!(ops[1].external_id.is_some());
        let sizes = encode_snapshot(KS, 1, std::slice::from_ref(&plain)).len();
        // Header 37, dictionary ("a:b", "free") 4 + 5 + 6, op count 4.
        assert_eq!(sizes, 37 + 4 + 5 + 6 + 4 + UPSERT_BYTES);
        for status in KeyStatus::ALL {
            assert_eq!(KeyStatus::from_code(status.code()), Some(status));
        }
        assert_eq!(KeyStatus::from_code(4), None);
    }

    #[test]
    fn bad_owners_and_unknown_bytes_are_refused() {
        for bad in ["", "with space", "tab\t", "é", &"x".repeat(129)] {
            assert!(!is_valid_external_id(bad), "{bad:?}");
            let e = FeedEntry {
                external_id: Some(bad.into()),
                ..entry(1)
            };
            let body = encode_snapshot(KS, 1, &[e]);
            assert_eq!(
                check_snapshot_page(&body, None),
                Err(FeedError::ExternalId),
                "{bad:?}"
            );
        }
        assert!(is_valid_external_id(&"x".repeat(128)));
        let good = encode_snapshot(KS, 1, &[entry(1)]);
        let extras_at = good.len() - 1;
        let status_at = good.len() - 2;
        for (at, byte) in [(status_at, 4u8), (extras_at, 4u8)] {
            let mut bad = good.clone();
            bad[at] = byte;
            assert_eq!(check_snapshot_page(&bad, None), Err(FeedError::Tag(4)));
        }
    }

    #[test]
    fn pages_are_sorted_and_chained() {
        let first = encode_snapshot_page(KS, 7, &[entry(3), entry(1)], true);
        let page = check_snapshot_page(&first, None).unwrap();
        assert_eq!(
            page,
            PageSummary {
                key_set: KS,
                version: 7,
                more: true,
                keys: 2,
                last_hash: Some([3; 32])
            }
        );
        let last = encode_snapshot_page(KS, 8, &[entry(4)], false);
        let page = check_snapshot_page(&last, page.last_hash.as_ref()).unwrap();
        assert_eq!((page.version, page.more, page.keys), (8, false, 1));
        assert_eq!(
            check_snapshot_page(&last, Some(&[4; 32])),
            Err(FeedError::Order)
        );
    }

    #[test]
    fn bad_pages_are_refused() {
        let dup = encode_snapshot_page(KS, 1, &[entry(2), entry(2)], false);
        assert_eq!(check_snapshot_page(&dup, None), Err(FeedError::Order));
        let empty = encode_snapshot_page(KS, 1, &[], true);
        assert_eq!(check_snapshot_page(&empty, None), Err(FeedError::EmptyPage));
        let delta = encode_delta(KS, 1, 2, &[]);
        assert!(check_snapshot_page(&delta, None).is_err());
        let whole = encode_snapshot(KS, 1, &[]);
        assert_eq!(check_snapshot_page(&whole, None).unwrap().last_hash, None);
    }
}
