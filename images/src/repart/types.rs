//! repart's `Type=` names and their GPT type GUIDs, from the
//! Discoverable Partitions Specification (uapi-group): `esp`, `xbootldr`,
//! `swap`, `home`, `srv`, `var`, `tmp`, `linux-generic`, and `root`,
//! `usr`, `root-verity`, `usr-verity` for one architecture
//! (`root-arm64`, `usr-x86-64-verity`, …) or, unsuffixed, the target's.

use crate::disk::types::Guid;

/// The architectures rootbox knows the root and `/usr` types of, with
/// repart's spelling: (name, root, usr, root-verity, usr-verity).
const ARCHES: &[(&str, [&str; 4])] = &[
    (
        "x86-64",
        [
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            "8484680C-9521-48C6-9C11-B0720656F69E",
            "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
            "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
        ],
    ),
    (
        "x86",
        [
            "44479540-F297-41B2-9AF7-D131D5F0458A",
            "75250D76-8CC6-458E-BD66-BD47CC81A812",
            "D13C5D3B-B5D1-422A-B29F-9454FDC89D76",
            "8F461B0D-14EE-4E81-9AA9-049B6FB97ABD",
        ],
    ),
    (
        "arm64",
        [
            "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
            "B0E01050-EE5F-4390-949A-9101B17104E9",
            "DF3300CE-D69F-4C92-978C-9BFB0F38D820",
            "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E",
        ],
    ),
    (
        "arm",
        [
            "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
            "7D0359A3-02B3-4F0A-865C-654403E70625",
            "7386CDF2-203C-47A9-A498-F2ECCE45A2D6",
            "C215D751-7BCD-4649-BE90-6627490A4C05",
        ],
    ),
    (
        "riscv64",
        [
            "72EC70A6-CF74-40E6-BD49-4BDA08E8F224",
            "BEAEC34B-8442-439B-A40B-984381ED097D",
            "B6ED5582-440B-4209-B8DA-5FF7C419EA3D",
            "8F1056BE-9B05-47C4-81D6-BE53128E5B54",
        ],
    ),
];

/// The architecture-independent types: (name, GUID, DPS class).
const PLAIN: &[(&str, &str, Class)] = &[
    ("esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Class::Esp),
    (
        "xbootldr",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        Class::Grows,
    ),
    ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", Class::Other),
    ("home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", Class::Grows),
    ("srv", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8", Class::Grows),
    ("var", "4D21B016-B534-45C2-A9FB-5C16E091FD2D", Class::Grows),
    ("tmp", "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1", Class::Grows),
    (
        "linux-generic",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        Class::Other,
    ),
];

/// What the Discoverable Partitions Specification says of a type, as far
/// as repart's flag defaults go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The ESP.
    Esp,
    /// root or `/usr`, home, srv, var, tmp, xbootldr: `GrowFileSystem=`
    /// defaults to on.
    Grows,
    /// A Verity hash partition type: `ReadOnly=` defaults to on.
    Verity,
    /// Anything else (swap, linux-generic, a raw GUID).
    Other,
}

/// A `Type=` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepartType {
    /// Its canonical name (`root-x86-64`), the default partition label;
    /// a raw GUID's text.
    pub name: String,
    /// The GPT type GUID.
    pub guid: Guid,
    /// Its class.
    pub class: Class,
}

/// An architecture name as repart writes it, or None.
pub fn known_arch(a: &str) -> bool {
    ARCHES.iter().any(|(n, _)| *n == a)
}

/// The architectures, for messages.
pub fn arch_names() -> String {
    ARCHES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The architecture rootbox is running on, in repart's spelling (the
/// default of `root`, `usr`, … as in repart).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        _ => "x86-64",
    }
}

/// Resolves `Type=` for architecture `arch`; None: not a type rootbox
/// knows.
pub fn resolve(value: &str, arch: &str) -> Option<RepartType> {
    if let Ok(g) = value.to_ascii_uppercase().parse::<Guid>() {
        return Some(RepartType {
            name: value.to_lowercase(),
            guid: g,
            class: Class::Other,
        });
    }
    if let Some((name, guid, class)) = PLAIN.iter().find(|(n, _, _)| *n == value) {
        return Some(RepartType {
            name: name.to_string(),
            guid: guid.parse().expect("built-in GUID"),
            class: *class,
        });
    }
    let (base, verity) = match value.strip_suffix("-verity") {
        Some(b) => (b, true),
        None => (value, false),
    };
    let (kind, a) = match base.split_once('-') {
        Some((k, a)) => (k, a),
        None => (base, arch),
    };
    let slot = match (kind, verity) {
        ("root", false) => 0,
        ("usr", false) => 1,
        ("root", true) => 2,
        ("usr", true) => 3,
        _ => return None,
    };
    let (a, guids) = ARCHES.iter().find(|(n, _)| *n == a)?;
    let name = match verity {
        true => format!("{kind}-{a}-verity"),
        false => format!("{kind}-{a}"),
    };
    Some(RepartType {
        name,
        guid: guids[slot].parse().expect("built-in GUID"),
        class: if verity { Class::Verity } else { Class::Grows },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_with_and_without_an_architecture() {
        let rows = [
            (
                "root",
                "arm64",
                "root-arm64",
                "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
            ),
            (
                "root-x86-64",
                "arm64",
                "root-x86-64",
                "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            ),
            (
                "usr-verity",
                "x86-64",
                "usr-x86-64-verity",
                "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
            ),
            (
                "root-arm64-verity",
                "x86-64",
                "root-arm64-verity",
                "DF3300CE-D69F-4C92-978C-9BFB0F38D820",
            ),
            (
                "esp",
                "x86-64",
                "esp",
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            ),
            (
                "srv",
                "x86-64",
                "srv",
                "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
            ),
            (
                "linux-generic",
                "x86-64",
                "linux-generic",
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            ),
        ];
        let mut bad = Vec::new();
        for (value, arch, name, guid) in rows {
            match resolve(value, arch) {
                Some(t) if t.name == name && t.guid.to_string() == guid => {}
                other => bad.push(format!("{value} ({arch}): {other:?}")),
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
        for unknown in [
            "root-mips",
            "usr-secondary",
            "root-verity-sig",
            "boot",
            "root-x86-64-verity-sig",
        ] {
            assert_eq!(resolve(unknown, "x86-64"), None, "{unknown}");
        }
    }
}
