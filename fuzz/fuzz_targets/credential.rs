//! Credential extraction and query stripping (`keygate::credential`). The
//! first line is the `:path`, each further line a `name: value` header. A
//! found key is never empty and has a source; the path without its
//! `api_key` parameters has none left, and stripping it again changes
//! nothing; the subprotocols without their `keygate.bearer.` entries (on an
//! upgrade) offer no key any more and strip to nothing more.

#![no_main]

use keygate::credential::{self, Extracted};
use libfuzzer_sys::fuzz_target;

const NO_HEADERS: &[(&str, &str)] = &[];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let headers: Vec<(&str, &str)> = lines
        .map(|line| {
            line.split_once(':')
                .map_or((line, ""), |(n, v)| (n, v.trim_start()))
        })
        .collect();
    let extracted = credential::extract(&headers, path);
    let stripped = credential::strip_query_key(path);
    if let Extracted::Key(c) = &extracted {
        assert!(!c.key.is_empty());
        let s = c.sources;
        assert!(s.bearer || s.header || s.query || s.subprotocol);
        assert!(!s.subprotocol || credential::is_websocket_upgrade(&headers));
        assert!(
            !c.sources.query || stripped.is_some(),
            "a key from the query is stripped"
        );
    }
    match &stripped {
        Some(rest) => {
            assert_eq!(credential::extract(NO_HEADERS, rest), Extracted::Missing);
            assert_eq!(credential::strip_query_key(rest), None);
            let base = path.split_once('?').map_or(path, |(b, _)| b);
            assert!(rest.starts_with(base));
        }
        None => assert_eq!(credential::extract(NO_HEADERS, path), Extracted::Missing),
    }
    if let Some(kept) = credential::strip_subprotocol_key(&headers) {
        let after = [
            ("upgrade", "websocket"),
            (credential::SEC_WEBSOCKET_PROTOCOL, kept.as_str()),
        ];
        assert_eq!(credential::extract(&after, "/"), Extracted::Missing);
        assert_eq!(credential::strip_subprotocol_key(&after), None);
    }
    for (_, value) in &headers {
        if let Some(token) = credential::bearer_token(value) {
            assert_eq!(token, token.trim());
        }
    }
});
