//! API key format (SPEC §1): `<prefix>_<env>_<secret><check>`, or
//! `<prefix>_<secret><check>` (every key `live`) under
//! [`KeyFormat::PrefixSecret`].
//!
//! `secret` is 43 base62 characters (256 bits) from the OS CSPRNG and `check`
//! is the CRC32 of everything before it in six base62 characters, so a typo or
//! a made-up key is refused without a table lookup. Only the SHA-256 of the
//! full key is ever stored; the first 12 characters identify it in logs.

use crate::base62;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "rk";
/// Characters of the random part: 43 base62 digits carry 256.03 bits.
pub const SECRET_LEN: usize = 43;
/// Longest secret accepted when parsing (room for longer future keys).
const MAX_SECRET_LEN: usize = 128;
/// Longest prefix accepted in configuration.
pub const MAX_PREFIX_LEN: usize = 16;
/// Length of the display prefix kept for identification.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// The environment a key was minted for: information for the upstream, not isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    /// The name used in keys, headers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            _ => Err(KeyError::Environment),
        }
    }
}

/// Why a string is not a well-formed key (or a prefix cannot make keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Wrong prefix, separators, environment or characters.
    Shape,
    /// The environment is neither `live` nor `test`.
    Environment,
    /// Well-shaped, but the checksum does not match.
    Checksum,
    /// The configured prefix is empty, too long or not `[a-z0-9]`.
    Prefix,
    /// The OS random generator failed.
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::Shape => "malformed API key",
            KeyError::Environment => "environment must be \"live\" or \"test\"",
            KeyError::Checksum => "API key checksum mismatch",
            KeyError::Prefix => "key prefix must be 1-16 characters of a-z and 0-9",
            KeyError::Random => "the OS random number generator failed",
        })
    }
}

impl std::error::Error for KeyError {}

/// Checks that `prefix` can start keys: 1–16 lowercase letters or digits.
pub fn validate_prefix(prefix: &str) -> Result<(), KeyError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(KeyError::Prefix)
    }
}

/// How keys are spelled: with an environment segment (`rk_live_…`, the
/// default) or without (`raeh_<secret><check>`, every key `live`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    #[default]
    PrefixEnvSecret,
    PrefixSecret,
}

impl KeyFormat {
    /// Every format, by its configuration name.
    pub const ALL: [KeyFormat; 2] = [KeyFormat::PrefixEnvSecret, KeyFormat::PrefixSecret];

    /// The name used in configuration (`key_format`, `--key-format`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyFormat::PrefixEnvSecret => "prefix_env_secret",
            KeyFormat::PrefixSecret => "prefix_secret",
        }
    }

    /// True when keys of `env` can be spelled in this format.
    pub fn allows(self, env: Environment) -> bool {
        self == KeyFormat::PrefixEnvSecret || env == Environment::Live
    }

    /// Mints a new key from the OS CSPRNG ([`KeyError::Environment`] for a
    /// `test` key in a format without an environment segment).
    #[cfg(feature = "generate")]
    pub fn generate(self, prefix: &str, env: Environment) -> Result<String, KeyError> {
        validate_prefix(prefix)?;
        if !self.allows(env) {
            return Err(KeyError::Environment);
        }
        let mut key = String::with_capacity(prefix.len() + 6 + SECRET_LEN + base62::U32_WIDTH);
        key.push_str(prefix);
        key.push('_');
        if self == KeyFormat::PrefixEnvSecret {
            key.push_str(env.as_str());
            key.push('_');
        }
        for c in random_base62(SECRET_LEN)? {
            key.push(char::from(c));
        }
        let check = base62::encode_u32(crc32fast::hash(key.as_bytes()));
        key.extend(check.iter().map(|&c| char::from(c)));
        Ok(key)
    }

    /// Validates shape and checksum of `key` for `prefix`, without any lookup.
    pub fn parse(self, key: &str, prefix: &str) -> Result<Environment, KeyError> {
        let rest = key
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(KeyError::Shape)?;
        let (env, body) = match self {
            KeyFormat::PrefixEnvSecret => {
                let (env, body) = rest.split_once('_').ok_or(KeyError::Shape)?;
                (env.parse().map_err(|_| KeyError::Shape)?, body)
            }
            KeyFormat::PrefixSecret => (Environment::Live, rest),
        };
        check_body(body.as_bytes())?;
        let split = key.len().saturating_sub(base62::U32_WIDTH);
        let (signed, check) = key
            .as_bytes()
            .split_at_checked(split)
            .ok_or(KeyError::Shape)?;
        if base62::encode_u32(crc32fast::hash(signed)) == check {
            Ok(env)
        } else {
            Err(KeyError::Checksum)
        }
    }
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KeyFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a key format (prefix_env_secret or prefix_secret)")
            })
    }
}

/// Mints a new key in the default format ([`KeyFormat::generate`]).
#[cfg(feature = "generate")]
pub fn generate(prefix: &str, env: Environment) -> Result<String, KeyError> {
    KeyFormat::PrefixEnvSecret.generate(prefix, env)
}

/// `n` uniformly random base62 digits (rejection sampling, no modulo bias).
#[cfg(feature = "generate")]
fn random_base62(n: usize) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|_| KeyError::Random)?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() < n {
                out.push(base62::digit_char(b % 62));
            }
        }
    }
    Ok(out)
}

/// Validates a key in the default format ([`KeyFormat::parse`]).
pub fn parse(key: &str, prefix: &str) -> Result<Environment, KeyError> {
    KeyFormat::PrefixEnvSecret.parse(key, prefix)
}

/// Checks `<secret><check>`: base62 only, a secret of an accepted length.
fn check_body(body: &[u8]) -> Result<(), KeyError> {
    let secret_len = body
        .len()
        .checked_sub(base62::U32_WIDTH)
        .ok_or(KeyError::Shape)?;
    if (SECRET_LEN..=MAX_SECRET_LEN).contains(&secret_len)
        && body.iter().all(|&c| base62::is_digit(c))
    {
        Ok(())
    } else {
        Err(KeyError::Shape)
    }
}

/// SHA-256 of the full key: the only form in which a key is stored.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// SHA-256 of the full key as lowercase hex.
pub fn hash_hex(key: &str) -> String {
    hex::encode(hash(key))
}

/// The first 12 characters of a key, safe to show and log.
pub fn display_prefix(key: &str) -> &str {
    key.char_indices()
        .nth(DISPLAY_PREFIX_LEN)
        .and_then(|(end, _)| key.get(..end))
        .unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_with_their_environment() {
        for env in [Environment::Live, Environment::Test] {
            let key = generate("rk", env).unwrap();
            assert!(key.starts_with(&format!("rk_{env}_")));
            assert_eq!(key.len(), 3 + 5 + SECRET_LEN + 6);
            assert_eq!(parse(&key, "rk"), Ok(env));
        }
    }

    #[test]
    fn keys_are_distinct() {
        let a = generate("rk", Environment::Live).unwrap();
        let b = generate("rk", Environment::Live).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn configurable_prefix() {
        let key = generate("acme", Environment::Test).unwrap();
        assert_eq!(parse(&key, "acme"), Ok(Environment::Test));
        assert_eq!(parse(&key, "rk"), Err(KeyError::Shape));
        assert_eq!(generate("Bad_", Environment::Live), Err(KeyError::Prefix));
        assert_eq!(generate("", Environment::Live), Err(KeyError::Prefix));
    }

    #[test]
    fn any_changed_character_fails_the_checksum() {
        let key = generate("rk", Environment::Live).unwrap();
        let mut bytes = key.clone().into_bytes();
        let i = 20;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(&typo, "rk"), Err(KeyError::Checksum));
    }

    #[test]
    fn bad_shapes() {
        let key = generate("rk", Environment::Live).unwrap();
        let cases = [
            String::new(),
            "rk".into(),
            "rk_live_".into(),
            key.replace("live", "prod"),
            key[..key.len() - 1].to_string(),
            format!("{key}x"),
            format!("{}-{}", &key[..20], &key[21..]),
            format!(" {key}"),
            "rk_live_é".into(),
        ];
        for case in cases {
            assert!(parse(&case, "rk").is_err(), "{case:?} parsed");
        }
    }

    #[test]
    fn prefix_secret_keys_have_no_environment_segment() {
        let f = KeyFormat::PrefixSecret;
        let key = f.generate("raeh", Environment::Live).unwrap();
        assert!(key.starts_with("raeh_"), "{key}");
        assert_eq!(key.len(), 5 + SECRET_LEN + 6);
        assert!(key[5..].bytes().all(base62::is_digit), "{key}");
        assert_eq!(f.parse(&key, "raeh"), Ok(Environment::Live));
        assert_eq!(parse(&key, "raeh"), Err(KeyError::Shape));
        assert_eq!(
            f.generate("raeh", Environment::Test),
            Err(KeyError::Environment)
        );
        // A key of the other format, even with a good checksum, is a bad shape.
        let env_key = generate("raeh", Environment::Live).unwrap();
        assert_eq!(f.parse(&env_key, "raeh"), Err(KeyError::Shape));
        let mut typo = key.into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(f.parse(&typo, "raeh"), Err(KeyError::Checksum));
    }

    #[test]
    fn key_format_names() {
        for f in KeyFormat::ALL {
            assert_eq!(f.as_str().parse::<KeyFormat>(), Ok(f));
        }
        assert_eq!(KeyFormat::default(), KeyFormat::PrefixEnvSecret);
        assert!("prefix-secret".parse::<KeyFormat>().is_err());
    }

    #[test]
    fn hash_and_display_prefix() {
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let key = generate("rk", Environment::Live).unwrap();
        assert_eq!(display_prefix(&key), &key[..12]);
        assert!(display_prefix(&key).starts_with("rk_live_"));
        assert_eq!(display_prefix("short"), "short");
        assert_eq!(display_prefix("ééééééééééééééé").chars().count(), 12);
    }
}
