//! A header map of the host's in one host call each way: read whole,
//! parsed with bounds checks into slices of the one buffer, and written back
//! whole; and the proxy-wasm format of such a map.
//!
//! The SDK's `get_map_bytes` copies every name and value into an allocation
//! of its own and panics on a host status other than Ok or on a name that is
//! not UTF-8. Here the serialized map the host hands over is kept whole and
//! parsed with bounds checks into `(name, value)` byte slices (the values as
//! they came, for writing back) and, from those, text pairs for the
//! decision: a few allocations a request whatever the number of headers, and
//! no panic on any input. The parser is pure, so it is tested natively and
//! fuzzed (`fuzz/`). The host calls themselves are in [`crate::host`].
//!
//! The host's format (proxy-wasm ABI): `u32` pair count, then per pair the
//! `u32` name and value lengths, then per pair the name and the value, each
//! followed by a NUL byte; integers little-endian.

use crate::host::{self, Status};
use proxy_wasm::types::MapType;
use std::borrow::Cow;

/// One header as the host sent it: name and value bytes.
pub type Entry<'a> = (&'a [u8], &'a [u8]);

/// A serialized header map, as the host handed it over.
pub struct RawHeaders(Vec<u8>);

impl RawHeaders {
    /// Reads the header map `map`; `None` when the host refuses.
    pub fn read(map: MapType) -> Option<RawHeaders> {
        host::header_map(map).ok().map(RawHeaders)
    }

    /// The entries, in the host's order; `None` when the buffer is not a
    /// well-formed map.
    pub fn entries(&self) -> Option<Vec<Entry<'_>>> {
        parse_entries(&self.0)
    }
}

/// Replaces every header of `map` with `pairs`, in one host call.
pub fn write<N: AsRef<[u8]>, V: AsRef<[u8]>>(map: MapType, pairs: &[(N, V)]) -> Result<(), Status> {
    host::set_header_map(map, &serialize(pairs))
}

/// The entries as text pairs; bytes of a value that are not UTF-8 read as
/// U+FFFD (such a value is never a valid key, but it is still one). `None`
/// when a name is not UTF-8.
pub fn text<'a>(entries: &[Entry<'a>]) -> Option<Vec<(&'a str, Cow<'a, str>)>> {
    entries
        .iter()
        .map(|&(name, value)| {
            Some((
                std::str::from_utf8(name).ok()?,
                String::from_utf8_lossy(value),
            ))
        })
        .collect()
}

/// The first value of header `name` (case-insensitive) among `entries`.
pub fn value<'a>(entries: &[Entry<'a>], name: &str) -> Option<&'a [u8]> {
    entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|&(_, v)| v)
}

/// Serializes `(name, value)` pairs in the host's format (see the module doc).
pub fn serialize<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let text: usize = pairs
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + 8 * pairs.len() + text);
    out.extend_from_slice(&len_u32(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len_u32(name.as_ref().len()));
        out.extend_from_slice(&len_u32(value.as_ref().len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

fn len_u32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?) as usize)
}

/// Parses a serialized map (see the module doc) into text pairs; `None`
/// when malformed (see [`text`]).
pub fn parse(bytes: &[u8]) -> Option<Vec<(&str, Cow<'_, str>)>> {
    text(&parse_entries(bytes)?)
}

/// Parses a serialized map (see the module doc); `None` when malformed.
pub fn parse_entries(bytes: &[u8]) -> Option<Vec<Entry<'_>>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = u32_at(bytes, 0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    // Every pair takes at least 10 bytes: never trust the count alone.
    let mut entries = Vec::with_capacity(count.min(bytes.len() / 10));
    for i in 0..count {
        let sizes = 4 + i * 8;
        let (name_len, value_len) = (u32_at(bytes, sizes)?, u32_at(bytes, sizes + 4)?);
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len + 1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len + 1)?;
        entries.push((name, value));
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_the_host_sends() {
        let bytes = serialize::<&str, &[u8]>(&[
            (":path", b"/a?b=c"),
            ("x-api-key", b"rk_test_x"),
            ("empty", b""),
            ("latin1", b"caf\xe9"),
        ]);
        let parsed = parse(&bytes).unwrap();
        let parsed: Vec<(&str, &str)> = parsed.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        assert_eq!(
            parsed,
            vec![
                (":path", "/a?b=c"),
                ("x-api-key", "rk_test_x"),
                ("empty", ""),
                ("latin1", "caf\u{FFFD}")
            ]
        );
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn malformed_maps_are_refused_without_panic() {
        let good = serialize::<&str, &[u8]>(&[("a", b"1"), ("bb", b"22")]);
        for cut in 1..good.len() - 1 {
            assert!(parse(&good[..cut]).is_none(), "prefix of {cut} bytes");
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_none());
        let mut long_name = good.clone();
        long_name[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&long_name).is_none());
        let bad_name = serialize::<&str, &[u8]>(&[("\u{e9}", b"1")]);
        let mut bad_name = bad_name;
        let at = bad_name.len() - 5;
        bad_name[at] = 0xff;
        assert!(parse(&bad_name).is_none());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn serialized_maps_round_trip(
            pairs in proptest::collection::vec(("[a-z:-]{1,12}", proptest::collection::vec(any::<u8>(), 0..24)), 0..12),
            cut in any::<usize>(),
        ) {
            let refs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            let bytes = serialize(&refs);
            let parsed = parse(&bytes).unwrap();
            prop_assert_eq!(parsed.len(), pairs.len());
            for ((name, value), (n, v)) in parsed.iter().zip(&pairs) {
                prop_assert_eq!(*name, n.as_str());
                prop_assert_eq!(value, &String::from_utf8_lossy(v));
            }
            let _ = parse(&bytes[..cut % (bytes.len() + 1)]);
        }
    }
}
