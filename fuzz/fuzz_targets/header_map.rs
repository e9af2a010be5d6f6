//! The filter's parser of the host's serialized header map
//! (`keygate_filter::headers`): any bytes parse or are refused, never a
//! panic, and what parses serializes back to a map that parses the same.

#![no_main]

use keygate_filter::headers::{parse, serialize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(pairs) = parse(data) else {
        return;
    };
    let again = serialize(
        &pairs
            .iter()
            .map(|(n, v)| (*n, v.as_ref()))
            .collect::<Vec<_>>(),
    );
    let reparsed = parse(&again).expect("a serialized map parses");
    assert_eq!(pairs, reparsed);
});
