//! Organisation and key ids: 64-bit numbers written `org_<16 hex>` / `key_<16 hex>`.
//!
//! Fixed-width ids keep a key table entry small (two `u64`s) and render
//! into a stack buffer, so setting `x-org-id` / `x-key-id` allocates nothing.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Text of an id: a 4-character tag plus 16 hex digits, on the stack.
#[derive(Clone, Copy)]
pub struct IdText([u8; 20]);

impl IdText {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Error for a string that is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    pub expected: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected an id like {}0123456789abcdef", self.expected)
    }
}

impl std::error::Error for IdError {}

fn render(tag: &str, value: u64) -> IdText {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 20];
    let (head, digits) = out.split_at_mut(4);
    for (slot, b) in head.iter_mut().zip(tag.bytes()) {
        *slot = b;
    }
    for (i, slot) in digits.iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xf;
        *slot = HEX.get(nibble as usize).copied().unwrap_or(b'0');
    }
    IdText(out)
}

fn parse(tag: &'static str, s: &str) -> Result<u64, IdError> {
    let err = IdError { expected: tag };
    let digits = s.strip_prefix(tag).ok_or(err.clone())?;
    let lower_hex = digits.len() == 16
        && digits
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if !lower_hex {
        return Err(err);
    }
    u64::from_str_radix(digits, 16).map_err(|_| err)
}

macro_rules! id_type {
    ($name:ident, $tag:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The id as text, without allocating.
            pub fn text(self) -> IdText {
                render($tag, self.0)
            }

            /// A fresh id from the OS CSPRNG.
            #[cfg(feature = "generate")]
            pub fn random() -> Result<Self, crate::key::KeyError> {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).map_err(|_| crate::key::KeyError::Random)?;
                Ok(Self(u64::from_le_bytes(bytes)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.text().as_str())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse($tag, s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.text().as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    OrgId,
    "org_",
    "An organisation (tenant) id, `org_<16 hex>`."
);
id_type!(KeyId, "key_", "An API key id, `key_<16 hex>`.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = OrgId(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "org_0123456789abcdef");
        assert_eq!("org_0123456789abcdef".parse::<OrgId>(), Ok(id));
        assert_eq!(KeyId(1).to_string(), "key_0000000000000001");
        assert_eq!(KeyId(u64::MAX).to_string(), "key_ffffffffffffffff");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "org_",
            "key_0123456789abcdef",
            "org_0123456789ABCDEF",
            "org_0123456789abcde",
            "org_0123456789abcdef0",
            "org_+123456789abcdef",
        ] {
            assert!(bad.parse::<OrgId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_is_text() {
        let json = serde_json::to_string(&KeyId(255)).unwrap();
        assert_eq!(json, "\"key_00000000000000ff\"");
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), KeyId(255));
        assert!(serde_json::from_str::<KeyId>("\"org_00000000000000ff\"").is_err());
    }
}
