//! Base62 alphabet and fixed-width encoding of 32-bit values (the key checksum).

/// The 62 characters keys are written in, in digit order.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Width of an encoded `u32`: 62^6 > 2^32.
pub(crate) const U32_WIDTH: usize = 6;

/// Encodes `value` as exactly six base62 digits, most significant first.
pub(crate) fn encode_u32(mut value: u32) -> [u8; U32_WIDTH] {
    let mut out = [b'0'; U32_WIDTH];
    for slot in out.iter_mut().rev() {
        *slot = digit_char((value % 62) as u8);
        value /= 62;
    }
    out
}

/// The character of digit `d` (`d` < 62).
pub(crate) fn digit_char(d: u8) -> u8 {
    ALPHABET.get(usize::from(d)).copied().unwrap_or(b'0')
}

/// True for the characters of the base62 alphabet.
pub(crate) fn is_digit(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fixed_width() {
        assert_eq!(&encode_u32(0), b"000000");
        assert_eq!(&encode_u32(61), b"00000z");
        assert_eq!(&encode_u32(62), b"000010");
        assert_eq!(&encode_u32(u32::MAX), b"4gfFC3");
    }
}
