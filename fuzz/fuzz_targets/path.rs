//! The path as rules match it (`keygate::rules::match_path`): the input is
//! a `:path`. What is accepted of one starting with `/` starts with `/` and has no empty, `.` or
//! `..` segment, no segment ending in a dot, no `\` and no `;`; it matches
//! as itself again (unless it still holds a `%`: one decoding only); a path
//! accepted without parameters is matched the same when they are allowed.

#![no_main]

use keygate::rules::match_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let strict = match_path(&path, false);
    let lenient = match_path(&path, true);
    if let Ok(p) = &strict {
        assert_eq!(lenient.as_ref().ok(), Some(p), "{path:?}");
    }
    if !path.starts_with('/') {
        return;
    }
    for matched in [strict, lenient].into_iter().flatten() {
        assert!(matched.starts_with('/'), "{path:?} -> {matched:?}");
        assert!(!matched.contains(['\\', ';']), "{path:?} -> {matched:?}");
        let inner = matched.trim_end_matches('/');
        for segment in inner.split('/').skip(1) {
            assert!(
                !segment.is_empty() && !segment.ends_with('.'),
                "{path:?} -> {matched:?}"
            );
        }
        if !matched.contains(['%', '?', '#']) {
            assert_eq!(match_path(&matched, false).ok().as_deref(), Some(&*matched));
        }
    }
});
