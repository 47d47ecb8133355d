//! The 256-bit hash value and its text form.

use std::fmt;
use std::str::FromStr;

/// A 256-bit perceptual hash. Bit `k` (0–255) is bit `k % 64` of word `k / 64`.
///
/// Its text form is the ThreatExchange convention used by Meta's reference and by
/// PyPI `pdqhash` users: 64 lowercase hex digits of the 256-bit integer whose bit `k`
/// is hash bit `k`, most significant digit first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash256(pub [u64; 4]);

impl Hash256 {
    /// Number of differing bits.
    #[inline]
    pub fn distance(&self, other: &Hash256) -> u32 {
        (self.0[0] ^ other.0[0]).count_ones()
            + (self.0[1] ^ other.0[1]).count_ones()
            + (self.0[2] ^ other.0[2]).count_ones()
            + (self.0[3] ^ other.0[3]).count_ones()
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// Bit `k` (0–255).
    pub fn bit(&self, k: usize) -> bool {
        self.0[k / 64] >> (k % 64) & 1 == 1
    }

    /// Little-endian bytes: word 0 first, each word little-endian (the on-disk form).
    pub fn to_le_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Inverse of [`Hash256::to_le_bytes`].
    pub fn from_le_bytes(bytes: &[u8; 32]) -> Hash256 {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8) yields 8 bytes"));
        }
        Hash256(words)
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}{:016x}{:016x}", self.0[3], self.0[2], self.0[1], self.0[0])
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({self})")
    }
}

/// Why a string is not a 256-bit hash.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseHashError {
    #[error("a PDQ hash is 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("a PDQ hash is 64 hex digits, found a non-hex character {0:?}")]
    NotHex(char),
}

impl FromStr for Hash256 {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParseHashError::Length(s.chars().count()));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(ParseHashError::NotHex(c));
        }
        let mut words = [0u64; 4];
        for (i, word) in words.iter_mut().enumerate() {
            // Word 3 is printed first.
            let start = (3 - i) * 16;
            *word = u64::from_str_radix(&s[start..start + 16], 16).expect("checked hex digits");
        }
        Ok(Hash256(words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bit_positions() {
        let mut h = Hash256::default();
        h.0[0] = 1; // bit 0: last hex digit
        h.0[3] = 1 << 63; // bit 255: first hex digit
        let s = h.to_string();
        assert_eq!(s.len(), 64);
        assert!(s.starts_with('8') && s.ends_with('1'), "{s}");
        assert_eq!(s.parse::<Hash256>().unwrap(), h);
        assert!(h.bit(0) && h.bit(255) && !h.bit(1));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!("abc".parse::<Hash256>(), Err(ParseHashError::Length(3)));
        let bad = "g".repeat(64);
        assert_eq!(bad.parse::<Hash256>(), Err(ParseHashError::NotHex('g')));
    }

    #[test]
    fn distance_counts_differing_bits() {
        let a = Hash256([0, 0, 0, 0]);
        let b = Hash256([u64::MAX, 1, 0, 3]);
        assert_eq!(a.distance(&b), 64 + 1 + 2);
        assert_eq!(Hash256::from_le_bytes(&b.to_le_bytes()), b);
    }
}
