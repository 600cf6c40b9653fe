//! Byte sizes as people write them: `"512M"`, `"1.5G"`, `"64KiB"`, `"4096"`.
//!
//! Every unit is a power of 1024: `K`/`KiB` = 2^10, `M`/`MiB` = 2^20,
//! `G`/`GiB` = 2^30, `T`/`TiB` = 2^40 (upper or lower case). A plain number
//! (optionally followed by `B`) is a count of bytes. Decimal units such as
//! `MB` are rejected rather than guessed at. A fraction (`1.5G`) is allowed
//! with a unit and rounds down to whole bytes.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number of bytes, parsed from and displayed as a human-readable size.
///
/// ```
/// use rootbox_images::size::ByteSize;
/// let s: ByteSize = "1.5G".parse().unwrap();
/// assert_eq!(s.bytes(), 1536 * 1024 * 1024);
/// assert_eq!(s.to_string(), "1536M");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// A filesystem size: computed from the content, or fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Size {
    /// Let rootbox pick the smallest size that fits (plus headroom).
    #[default]
    Auto,
    /// Exactly this many bytes.
    Fixed(ByteSize),
}

/// A size that could not be parsed. Its message names the input and gives
/// examples of valid sizes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}; write e.g. \"512M\", \"1.5G\", \"64KiB\" or \"4096\" (bytes; K/M/G/T are powers of 1024)")]
pub struct SizeError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

const UNITS: [(&str, u32); 5] = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)];

impl ByteSize {
    /// One kibibyte (1024 bytes).
    pub const KIB: u64 = 1 << 10;
    /// One mebibyte.
    pub const MIB: u64 = 1 << 20;
    /// One gibibyte.
    pub const GIB: u64 = 1 << 30;

    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, SizeError> {
        let err = |reason: &str| SizeError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.starts_with('-') {
            return Err(err("sizes cannot be negative"));
        }
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(num_end);
        let shift =
            match unit.to_ascii_uppercase().as_str() {
                "" | "B" => 0,
                "K" | "KIB" => 10,
                "M" | "MIB" => 20,
                "G" | "GIB" => 30,
                "T" | "TIB" => 40,
                "KB" | "MB" | "GB" | "TB" => return Err(err(
                    "decimal units are ambiguous; use K/M/G/T or KiB/MiB/GiB/TiB (powers of 1024)",
                )),
                _ => return Err(err(&format!("unknown unit {unit:?}"))),
            };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() || (num.contains('.') && frac.is_empty()) {
            return Err(err("expected a number before the unit"));
        }
        if frac.contains('.') || frac.len() > 12 {
            return Err(err("malformed number"));
        }
        if !frac.is_empty() && shift == 0 {
            return Err(err("a byte count must be a whole number"));
        }
        let too_big = || err("too large (the maximum is 16 EiB - 1 bytes)");
        let int = u128::from(int.parse::<u64>().map_err(|_| too_big())?);
        let frac_val: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().unwrap_or(0)
        };
        let total = (int << shift) + ((frac_val << shift) / 10u128.pow(frac.len() as u32));
        u64::try_from(total).map(ByteSize).map_err(|_| too_big())
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that represents the size exactly: `512M`, `1536M`,
    /// `4097`. Parsing the output gives the same size back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, shift) = UNITS
            .iter()
            .rev()
            .find(|(_, shift)| self.0 != 0 && self.0.trailing_zeros() >= *shift)
            .copied()
            .unwrap_or(("", 0));
        write!(f, "{}{unit}", self.0 >> shift)
    }
}

impl FromStr for Size {
    type Err = SizeError;

    /// `"auto"` or a [`ByteSize`] greater than zero.
    fn from_str(s: &str) -> Result<Self, SizeError> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Size::Auto);
        }
        match s.parse::<ByteSize>()? {
            ByteSize(0) => Err(SizeError {
                input: s.to_owned(),
                reason: "a filesystem cannot be 0 bytes; use \"auto\" to size it to its content"
                    .into(),
            }),
            b => Ok(Size::Fixed(b)),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Auto => f.write_str("auto"),
            Size::Fixed(b) => b.fmt(f),
        }
    }
}

/// Accepts a JSON string (parsed with `FromStr`) or a non-negative integer
/// (bytes, passed to `FromStr` as decimal text so both forms share checks).
struct SizeVisitor<T>(std::marker::PhantomData<T>);

impl<T: FromStr<Err = SizeError>> Visitor<'_> for SizeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"512M\" or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(E::custom(format!(
            "invalid size {v}: a number must be a whole count of bytes; write fractions as a string like \"1.5G\""
        )))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor(std::marker::PhantomData))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> u64 {
        s.parse::<ByteSize>().unwrap().bytes()
    }

    fn bad(s: &str) -> String {
        s.parse::<ByteSize>().unwrap_err().to_string()
    }

    #[test]
    fn parses_units() {
        assert_eq!(b("4096"), 4096);
        assert_eq!(b("4096B"), 4096);
        assert_eq!(b("512M"), 512 << 20);
        assert_eq!(b("512m"), 512 << 20);
        assert_eq!(b("2G"), 2 << 30);
        assert_eq!(b("1.5G"), 3 << 29);
        assert_eq!(b("1T"), 1 << 40);
        assert_eq!(b("64KiB"), 64 << 10);
        assert_eq!(b("3MiB"), 3 << 20);
        assert_eq!(b(" 7K "), 7 << 10);
        assert_eq!(b("0"), 0);
        assert_eq!(b("0.1K"), 102);
        assert_eq!(b("16777215T"), 16777215 << 40);
    }

    #[test]
    fn rejects_junk_with_examples() {
        for (input, needle) in [
            ("", "empty"),
            ("-1", "negative"),
            ("-5M", "negative"),
            ("10MB", "decimal units"),
            ("12X", "unknown unit"),
            ("M", "number before"),
            ("1.G", "number before"),
            ("1.2.3M", "malformed"),
            ("1.5", "whole number"),
            ("16777216T", "too large"),
            ("99999999999999999999999", "too large"),
            ("1 G", "unknown unit"),
        ] {
            let e = bad(input);
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.contains(&format!("{input:?}")), "{e}");
            assert!(e.contains("\"512M\""), "{e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for n in [0, 1, 4097, 1024, 512 << 20, 3 << 29, 1 << 40, u64::MAX] {
            let s = ByteSize(n).to_string();
            assert_eq!(s.parse::<ByteSize>().unwrap().bytes(), n, "{s}");
        }
        assert_eq!(ByteSize(512 << 20).to_string(), "512M");
        assert_eq!(ByteSize(3 << 29).to_string(), "1536M");
        assert_eq!(ByteSize(4097).to_string(), "4097");
        assert_eq!(ByteSize(0).to_string(), "0");
    }

    #[test]
    fn size_auto_or_fixed() {
        assert_eq!("auto".parse::<Size>().unwrap(), Size::Auto);
        assert_eq!("AUTO".parse::<Size>().unwrap(), Size::Auto);
        assert_eq!(
            "2G".parse::<Size>().unwrap(),
            Size::Fixed(ByteSize(2 << 30))
        );
        assert!("0"
            .parse::<Size>()
            .unwrap_err()
            .to_string()
            .contains("auto"));
        assert_eq!(Size::Fixed(ByteSize(2 << 30)).to_string(), "2G");
        assert_eq!(Size::Auto.to_string(), "auto");
    }

    #[test]
    fn serde_string_or_integer() {
        let s: Size = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(s, Size::Auto);
        let s: Size = serde_json::from_str("1048576").unwrap();
        assert_eq!(s, Size::Fixed(ByteSize(1 << 20)));
        let b: ByteSize = serde_json::from_str("\"256M\"").unwrap();
        assert_eq!(b, ByteSize(256 << 20));
        let e = serde_json::from_str::<ByteSize>("-3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative"), "{e}");
        let e = serde_json::from_str::<ByteSize>("1.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"1.5G\""), "{e}");
        let e = serde_json::from_str::<ByteSize>("true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a size"), "{e}");
        assert_eq!(serde_json::to_string(&Size::Auto).unwrap(), "\"auto\"");
        assert_eq!(serde_json::to_string(&ByteSize(1 << 30)).unwrap(), "\"1G\"");
    }
}
