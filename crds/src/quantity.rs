//! Byte sizes written as plain integers or Kubernetes quantities.
//!
//! Users write `1048576`, `1Mi` or `1M` wherever a size is expected, in the
//! SliceCache spec, in the agent's config file and on its command line. One
//! parser keeps all three in agreement.

use std::fmt;

/// Why a string is not a byte size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty size")]
    Empty,
    #[error("{0:?} is not a size: expected bytes or a quantity such as 64Ki, 1Mi, 10Gi or 500M")]
    Malformed(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

const SUFFIXES: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Parses a whole number of bytes: `1048576`, `1Mi`, `64Ki`, `2G`.
///
/// Fractions and exponents (`1.5Gi`, `1e6`) are rejected: a cache size that
/// is not a whole number of bytes is a typo more often than an intent.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (digits, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, mult)| s.strip_suffix(suffix).map(|d| (d, *mult)))
        .unwrap_or((s, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::Malformed(input.to_string()));
    }
    let n: u64 = digits.parse().map_err(|_| QuantityError::Overflow(input.to_string()))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| QuantityError::Overflow(input.to_string()))
}

/// Formats bytes as the shortest exact binary quantity (`1Mi`, `1536Ki`, `7`).
pub fn format_bytes(bytes: u64) -> String {
    BinaryQuantity(bytes).to_string()
}

struct BinaryQuantity(u64);

impl fmt::Display for BinaryQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: &[(&str, u32)] = &[("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
        let n = self.0;
        if n != 0 {
            for (unit, shift) in UNITS {
                if n.trailing_zeros() >= *shift {
                    return write!(f, "{}{unit}", n >> shift);
                }
            }
        }
        write!(f, "{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("1Mi"), Ok(1 << 20));
        assert_eq!(parse_bytes("64Ki"), Ok(65536));
        assert_eq!(parse_bytes(" 2G "), Ok(2_000_000_000));
        assert_eq!(parse_bytes("0"), Ok(0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Mi", "1.5Gi", "-1", "1e6", "1 Mi", "0x10", "1mi", "abc"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(parse_bytes("99999999999Ei"), Err(QuantityError::Overflow(_))));
    }

    #[test]
    fn formats_round_trip() {
        for n in [0, 1, 1023, 1024, 1536 * 1024, 1 << 20, 3 << 30, 12345] {
            assert_eq!(parse_bytes(&format_bytes(n)), Ok(n));
        }
        assert_eq!(format_bytes(1 << 20), "1Mi");
        assert_eq!(format_bytes(1536 * 1024), "1536Ki");
    }
}
