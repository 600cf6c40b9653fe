//! The text-valued fields of a spec that are more than a string: the
//! filesystem [`Uuid`] and the [`Compress`] setting, each read from and
//! shown as the text the spec, the CLI and NixOS write. Re-exported from
//! [`crate::spec`].

use std::fmt;
use std::str::FromStr;

/// A filesystem UUID. The spec, the CLI and NixOS `fileSystems` write it
/// in the hyphenated 8-4-4-4-12 hex form (either case); it is shown in
/// lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uuid {
    value: uuid::Uuid,
    /// The lower-case hyphenated text, encoded once.
    text: [u8; uuid::fmt::Hyphenated::LENGTH],
}

impl Uuid {
    /// The UUID with these 16 bytes (RFC 9562 byte order).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self::from(uuid::Uuid::from_bytes(bytes))
    }

    /// The canonical lower-case text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).expect("a hyphenated UUID is ASCII")
    }

    /// The UUID as the `uuid` crate's type.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.value
    }
}

impl From<uuid::Uuid> for Uuid {
    fn from(value: uuid::Uuid) -> Self {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        value.hyphenated().encode_lower(&mut text);
        Uuid { value, text }
    }
}

/// Text that is not a UUID in the 8-4-4-4-12 form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid UUID {input:?}: expected 8-4-4-4-12 hex digits, e.g. \"44444444-4444-4444-8888-888888888888\"")]
pub struct UuidError {
    /// The text as given.
    pub input: String,
}

impl FromStr for Uuid {
    type Err = UuidError;

    fn from_str(s: &str) -> Result<Self, UuidError> {
        // The uuid crate also reads the braced, URN and 32-digit forms;
        // only the hyphenated form has exactly this length.
        if s.len() != uuid::fmt::Hyphenated::LENGTH {
            return Err(UuidError { input: s.into() });
        }
        uuid::Uuid::try_parse(s)
            .map(Uuid::from)
            .map_err(|_| UuidError { input: s.into() })
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compression for `mkfs.btrfs --compress ALGO[:LEVEL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compress {
    /// No compression (`no`; the spec also accepts `none`).
    No,
    /// zstd, with an optional level 1..=15.
    Zstd(Option<u8>),
    /// zlib, with an optional level 1..=9.
    Zlib(Option<u8>),
    /// lzo (no levels).
    Lzo,
}

impl Compress {
    /// The `--compress` argument, e.g. `zstd:3`, `lzo`, `no`.
    pub fn mkfs_arg(&self) -> String {
        match self {
            Compress::No => "no".into(),
            Compress::Lzo => "lzo".into(),
            Compress::Zstd(None) => "zstd".into(),
            Compress::Zlib(None) => "zlib".into(),
            Compress::Zstd(Some(l)) => format!("zstd:{l}"),
            Compress::Zlib(Some(l)) => format!("zlib:{l}"),
        }
    }

    /// Whether files are compressed at all.
    pub fn is_enabled(&self) -> bool {
        *self != Compress::No
    }
}

impl FromStr for Compress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (algo, level) = match s.split_once(':') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let level = |max: u8| -> Result<Option<u8>, String> {
            level
                .map(|l| match l.parse::<u8>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "invalid compression {s:?}: {algo} levels are 1..{max}"
                    )),
                })
                .transpose()
        };
        match algo {
            "zstd" => Ok(Compress::Zstd(level(15)?)),
            "zlib" => Ok(Compress::Zlib(level(9)?)),
            "lzo" | "no" | "none" if s.contains(':') => {
                Err(format!("invalid compression {s:?}: {algo} takes no level"))
            }
            "lzo" => Ok(Compress::Lzo),
            "no" | "none" => Ok(Compress::No),
            _ => Err(format!(
                "unknown compression {s:?}; expected zstd[:1..15], zlib[:1..9], lzo or no"
            )),
        }
    }
}

impl fmt::Display for Compress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.mkfs_arg())
    }
}
