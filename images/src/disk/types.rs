//! Partition types (names → GPT type GUIDs and MBR type bytes), GUIDs and
//! GPT attribute bits.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::hash::{Digest, Sha256};

/// A GUID as written (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`): the 16
/// bytes in text order. On disk GPT stores the first three fields
/// little-endian ([`Guid::to_disk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

/// Text that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GUID {0:?}: write it as 8-4-4-4-12 hex digits, e.g. \"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\"")]
pub struct GuidError(pub String);

impl Guid {
    /// The on-disk (mixed-endian) form: the first three fields
    /// little-endian (`uuid`'s `to_bytes_le`).
    pub fn to_disk(self) -> [u8; 16] {
        uuid::Uuid::from_bytes(self.0).to_bytes_le()
    }

    /// From the on-disk form (`uuid`'s `from_bytes_le`).
    pub fn from_disk(d: [u8; 16]) -> Guid {
        Guid(uuid::Uuid::from_bytes_le(d).into_bytes())
    }

    /// A version-4-shaped GUID from 16 random or derived bytes.
    pub fn from_random(mut b: [u8; 16]) -> Guid {
        b[6] = (b[6] & 0x0F) | 0x40;
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid(b)
    }

    /// The GUID a reproducible disk gives `purpose` (e.g. `partition 2`)
    /// for `seed`: the first 16 bytes of SHA-256(seed, purpose), shaped as
    /// version 4.
    pub fn derive(seed: &[u8], purpose: &str) -> Guid {
        Guid::from_random(derive_bytes(seed, purpose))
    }

    /// All zero (an unused GPT entry's type).
    pub fn is_zero(self) -> bool {
        self.0 == [0; 16]
    }
}

/// 16 bytes derived from `seed` and `purpose`.
pub fn derive_bytes(seed: &[u8], purpose: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"rootbox-disk/1\0");
    h.update((seed.len() as u64).to_le_bytes());
    h.update(seed);
    h.update(purpose.as_bytes());
    h.finalize()[..16].try_into().expect("16 bytes")
}

impl FromStr for Guid {
    type Err = GuidError;

    fn from_str(s: &str) -> Result<Guid, GuidError> {
        let err = || GuidError(s.to_owned());
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(err());
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        for (i, o) in b.iter_mut().enumerate() {
            *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(err)?, 16)
                .map_err(|_| err())?;
        }
        Ok(Guid(b))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h: String = self.0.iter().map(|x| format!("{x:02X}")).collect();
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A named partition type: its GPT type GUID and MBR type byte.
pub struct NamedType {
    /// The name in specs (`esp`).
    pub name: &'static str,
    /// The GPT type GUID.
    pub gpt: &'static str,
    /// None: the type has no MBR equivalent.
    pub mbr: Option<u8>,
    /// What it is, for listings.
    pub what: &'static str,
}

/// The partition type names rootbox knows (the Discoverable Partitions
/// Specification's and the UEFI specification's GUIDs).
pub const NAMED_TYPES: &[NamedType] = &[
    NamedType {
        name: "esp",
        gpt: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        mbr: Some(0xEF),
        what: "EFI system partition",
    },
    NamedType {
        name: "xbootldr",
        gpt: "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        mbr: Some(0xEA),
        what: "extended boot loader partition",
    },
    NamedType {
        name: "linux",
        gpt: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        mbr: Some(0x83),
        what: "Linux filesystem data",
    },
    NamedType {
        name: "root-x86-64",
        gpt: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        mbr: Some(0x83),
        what: "root partition (x86-64)",
    },
    NamedType {
        name: "root-arm64",
        gpt: "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        mbr: Some(0x83),
        what: "root partition (arm64)",
    },
    NamedType {
        name: "root-x86",
        gpt: "44479540-F297-41B2-9AF7-D131D5F0458A",
        mbr: Some(0x83),
        what: "root partition (x86)",
    },
    NamedType {
        name: "root-arm",
        gpt: "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
        mbr: Some(0x83),
        what: "root partition (32-bit arm)",
    },
    NamedType {
        name: "root-riscv64",
        gpt: "72EC70A6-CF74-40E6-BD49-4BDA08E8F224",
        mbr: Some(0x83),
        what: "root partition (riscv64)",
    },
    NamedType {
        name: "home",
        gpt: "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
        mbr: Some(0x83),
        what: "home partition",
    },
    NamedType {
        name: "swap",
        gpt: "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        mbr: Some(0x82),
        what: "swap",
    },
    NamedType {
        name: "fat32",
        gpt: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        mbr: Some(0x0C),
        what: "FAT32 (LBA); GPT: Microsoft basic data",
    },
    NamedType {
        name: "fat16",
        gpt: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        mbr: Some(0x0E),
        what: "FAT16 (LBA); GPT: Microsoft basic data",
    },
    NamedType {
        name: "bios-boot",
        gpt: "21686148-6449-6E6F-744E-656564454649",
        mbr: None,
        what: "BIOS boot partition (GRUB)",
    },
];

/// A partition type as given: a name, a GPT type GUID, or an MBR byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartType {
    /// The GPT type GUID, if it has one.
    pub gpt: Option<Guid>,
    /// The MBR type byte, if it has one.
    pub mbr: Option<u8>,
}

/// A partition type that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown partition type {0:?}: use a name ({names}), a GPT type GUID, or an MBR type byte such as \"0x83\" or \"b\"", names = type_names())]
pub struct TypeError(pub String);

fn type_names() -> String {
    NAMED_TYPES
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for PartType {
    type Err = TypeError;

    fn from_str(s: &str) -> Result<PartType, TypeError> {
        if let Some(t) = NAMED_TYPES.iter().find(|t| t.name == s) {
            return Ok(PartType {
                gpt: Some(t.gpt.parse().expect("built-in GUID")),
                mbr: t.mbr,
            });
        }
        if let Ok(g) = s.parse::<Guid>() {
            return Ok(PartType {
                gpt: Some(g),
                mbr: None,
            });
        }
        let hex = s.strip_prefix("0x").unwrap_or(s);
        if (1..=2).contains(&hex.len()) {
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                if b != 0 {
                    return Ok(PartType {
                        gpt: None,
                        mbr: Some(b),
                    });
                }
            }
        }
        Err(TypeError(s.to_owned()))
    }
}

/// GPT attribute bits by name (UEFI: 0–2; Discoverable Partitions: 59–63).
pub const ATTRIBUTE_NAMES: &[(&str, u8)] = &[
    ("required", 0),
    ("no-block-io", 1),
    ("legacy-bootable", 2),
    ("growfs", 59),
    ("read-only", 60),
    ("no-auto", 63),
    ("hidden", 62),
];

/// One GPT attribute: a name from [`ATTRIBUTE_NAMES`] or a bit number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Attribute {
    /// A bit number, 0–63.
    Bit(u8),
    /// A name from [`ATTRIBUTE_NAMES`].
    Name(String),
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attribute, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let names = || {
            ATTRIBUTE_NAMES
                .iter()
                .map(|(n, b)| format!("{n} ({b})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match v {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(b) if b < 64 => Ok(Attribute::Bit(b as u8)),
                _ => Err(de::Error::custom(format!(
                    "GPT attribute bit {n} is not a number from 0 to 63"
                ))),
            },
            serde_json::Value::String(s) => {
                if ATTRIBUTE_NAMES.iter().any(|(n, _)| *n == s) {
                    Ok(Attribute::Name(s))
                } else {
                    Err(de::Error::custom(format!(
                        "unknown GPT attribute {s:?}: use a bit number (0-63) or one of {}",
                        names()
                    )))
                }
            }
            other => Err(de::Error::custom(format!(
                "a GPT attribute is a name or a bit number, not {other}"
            ))),
        }
    }
}

impl Attribute {
    /// The bit number.
    pub fn bit(&self) -> u8 {
        match self {
            Attribute::Bit(b) => *b,
            Attribute::Name(n) => ATTRIBUTE_NAMES
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, b)| *b)
                .expect("checked when read"),
        }
    }
}

/// A 32-bit number written in hex (`"0x2178694e"`) or as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex32(pub u32);

impl Serialize for Hex32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("0x{:08x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hex32, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Hex32)
                .ok_or_else(|| de::Error::custom(format!("{n} is not a 32-bit number"))),
            serde_json::Value::String(s) => {
                let h = s
                    .strip_prefix("0x")
                    .or_else(|| s.strip_prefix("0X"))
                    .unwrap_or(&s);
                let h: String = h.chars().filter(|&c| c != '-').collect();
                (h.len() <= 8)
                    .then(|| u32::from_str_radix(&h, 16).ok())
                    .flatten()
                    .map(Hex32)
                    .ok_or_else(|| {
                        de::Error::custom(format!(
                            "{s:?} is not a 32-bit hex number such as \"0x2178694e\""
                        ))
                    })
            }
            v => Err(de::Error::custom(format!(
                "expected a hex string such as \"0x2178694e\", found {v}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_round_trip_through_text_and_disk_order() {
        let g: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            g.to_disk(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(Guid::from_disk(g.to_disk()), g);
        assert!("C12A7328F81F11D2BA4B00A0C93EC93B".parse::<Guid>().is_err());
        assert!("C12A7328-F81F-11D2-BA4B-00A0C93EC9ZZ"
            .parse::<Guid>()
            .is_err());
    }

    #[test]
    fn types_parse_from_names_guids_and_bytes() {
        let esp: PartType = "esp".parse().unwrap();
        assert_eq!(esp.mbr, Some(0xEF));
        assert_eq!(
            esp.gpt.unwrap().to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!("b".parse::<PartType>().unwrap().mbr, Some(0x0B));
        assert_eq!("0x83".parse::<PartType>().unwrap().mbr, Some(0x83));
        let e = "linx".parse::<PartType>().unwrap_err().to_string();
        assert!(e.contains("\"linx\"") && e.contains("root-arm64"), "{e}");
        assert!("0x0".parse::<PartType>().is_err());
    }

    #[test]
    fn derived_guids_depend_on_seed_and_purpose_only() {
        let a = Guid::derive(b"s", "partition 1");
        assert_eq!(a, Guid::derive(b"s", "partition 1"));
        assert_ne!(a, Guid::derive(b"s", "partition 2"));
        assert_ne!(a, Guid::derive(b"t", "partition 1"));
        assert_eq!(a.0[6] >> 4, 4);
    }
}
