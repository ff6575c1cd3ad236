//! Blob ids: the BLAKE3 hash of a blob's raw bytes.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The BLAKE3 hash of a blob's raw (uncompressed) bytes; shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Id {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Id> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Id(out))
    }

    /// Whether `name` is exactly how the store spells an id in file names (64 lowercase hex).
    pub(crate) fn is_canonical(name: &str) -> bool {
        name.len() == 64
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.to_hex())
    }
}

impl FromStr for Id {
    type Err = Error;

    fn from_str(s: &str) -> Result<Id, Error> {
        Id::from_hex(s).ok_or_else(|| {
            Error::Invalid(format!("{s:?} is not a blob id (expected 64 hex digits)"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of(b"hello");
        let hex = id.to_hex();
        assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
        assert!(Id::is_canonical(&hex));
        assert_eq!(hex.parse::<Id>().unwrap(), id);
        assert_eq!(Id::from_hex(&hex.to_uppercase()), Some(id));
        assert!(!Id::is_canonical(&hex.to_uppercase()));
        assert!("xyz".parse::<Id>().is_err());
        assert!(Id::from_hex(&"g".repeat(64)).is_none());
        assert!(Id::from_hex("é").is_none());
    }
}
