//! Key parsing (`keygate::key`, both formats): the first line is the key
//! prefix (the default when it is not a valid one), the rest the key. A key
//! that parses has the prefix (and, in `prefix_env_secret`, its
//! environment) in front, and changing its last (check) character to
//! another base62 digit makes it fail.

#![no_main]

use keygate::key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (prefix, candidate) = text
        .split_once('\n')
        .unwrap_or((key::DEFAULT_PREFIX, text.as_ref()));
    let prefix = if key::validate_prefix(prefix).is_ok() {
        prefix
    } else {
        key::DEFAULT_PREFIX
    };
    let shown = key::display_prefix(candidate);
    assert!(candidate.starts_with(shown) && shown.chars().count() <= key::DISPLAY_PREFIX_LEN);
    let _ = key::hash(candidate);
    for format in key::KeyFormat::ALL {
        let Ok(env) = format.parse(candidate, prefix) else {
            continue;
        };
        let front = match format {
            key::KeyFormat::PrefixEnvSecret => format!("{prefix}_{env}_"),
            key::KeyFormat::PrefixSecret => format!("{prefix}_"),
        };
        assert!(candidate.starts_with(&front));
        let (body, last) = candidate.split_at(candidate.len() - 1);
        let other = if last == "0" { "1" } else { "0" };
        assert!(format.parse(&format!("{body}{other}"), prefix).is_err());
    }
});
