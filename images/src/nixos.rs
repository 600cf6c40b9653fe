//! Reads the subvolume layout from a NixOS `fileSystems` definition.
//!
//! The input is the JSON of `builtins.toJSON config.fileSystems`: an object
//! from mount point to entry (the list form `[{…}, …]` is accepted too):
//!
//! ```json
//! { "/nix": { "mountPoint": "/nix", "device": "/dev/disk/by-label/nixos",
//!             "fsType": "btrfs", "options": ["subvol=@nix", "noatime"] } }
//! ```
//!
//! Rules, entry by entry:
//! - a `tmpfs` at `/` means the image has no root subvolume
//!   ([`NixosLayout::root_is_tmpfs`]); other tmpfs and non-btrfs entries,
//!   and btrfs entries on other devices, are listed in
//!   [`NixosLayout::ignored`];
//! - a btrfs entry on the image device with `subvol=NAME` or
//!   `subvol=/NAME` becomes subvolume `NAME`; the one mounted at `/` is
//!   the default subvolume, so the image boots into it without
//!   `rootflags`. Its other options are reported in
//!   [`NixosLayout::mount_options`];
//! - `subvol=a/b` is an error: rootbox puts every subvolume at the top
//!   level of the filesystem;
//! - `subvolid=N` is an error (ids are not stable across builds), except
//!   `subvolid=5`, the top level;
//! - an entry mounting the top level (no `subvol=`, `subvol=/` or
//!   `subvolid=5`) is an error at `/` (rootbox needs a subvolume or a tmpfs
//!   for `/`) and ignored elsewhere (e.g. a `/mnt/pool` for snapshot
//!   tools: the top level always exists).

use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::layout::{check_image_path, ImagePathError, Layout, LayoutError};
use crate::spec::{SubvolKind, SubvolumeSpec};

/// Which device the image is: entries on it become subvolumes.
///
/// An entry is on the image when its `device` is
/// `/dev/disk/by-label/<label>`, `LABEL=<label>`, `/dev/disk/by-uuid/<uuid>`,
/// `UUID=<uuid>` or equal to `device`, or its `label` field is `label`.
/// When all three are `None`, the device of the btrfs entries is taken if
/// they all share one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDevice {
    /// The image's filesystem label.
    pub label: Option<String>,
    /// The image's filesystem UUID.
    pub uuid: Option<String>,
    /// A device path as written in `fileSystems`, e.g. `/dev/vda2`.
    pub device: Option<String>,
}

impl ImageDevice {
    /// Whether nothing identifies the device.
    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.uuid.is_none() && self.device.is_none()
    }

    fn ids(&self) -> Vec<DevId> {
        let mut ids = Vec::new();
        ids.extend(self.label.clone().map(DevId::Label));
        ids.extend(
            self.uuid
                .as_deref()
                .map(|u| DevId::Uuid(u.to_ascii_lowercase())),
        );
        ids.extend(self.device.as_deref().map(DevId::parse));
        ids
    }
}

impl fmt::Display for ImageDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            self.label.as_ref().map(|l| format!("label={l}")),
            self.uuid.as_ref().map(|u| format!("uuid={u}")),
            self.device.as_ref().map(|d| format!("device={d}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            f.write_str("unspecified")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// How an entry names its device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DevId {
    Label(String),
    Uuid(String),
    Path(String),
}

impl DevId {
    fn parse(device: &str) -> DevId {
        if let Some(l) = device
            .strip_prefix("/dev/disk/by-label/")
            .or_else(|| device.strip_prefix("LABEL="))
        {
            DevId::Label(l.to_owned())
        } else if let Some(u) = device
            .strip_prefix("/dev/disk/by-uuid/")
            .or_else(|| device.strip_prefix("UUID="))
        {
            DevId::Uuid(u.to_ascii_lowercase())
        } else {
            DevId::Path(device.to_owned())
        }
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevId::Label(l) => write!(f, "label={l}"),
            DevId::Uuid(u) => write!(f, "uuid={u}"),
            DevId::Path(p) => write!(f, "device={p}"),
        }
    }
}

/// The layout read from `fileSystems`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NixosLayout {
    /// The subvolumes, in input order; already checked with
    /// [`Layout::new`]. The one at `/` is of kind [`SubvolKind::Default`].
    pub subvolumes: Vec<SubvolumeSpec>,
    /// Whether `/` is a tmpfs (an impermanence layout).
    pub root_is_tmpfs: bool,
    /// Mount options other than `subvol=` of each subvolume's entry, by
    /// mount point (e.g. `compress=zstd`, `noatime`), for the caller to
    /// report; entries without other options are left out.
    pub mount_options: Vec<(String, Vec<String>)>,
    /// Entries that do not become subvolumes, each with the reason.
    pub ignored: Vec<String>,
    /// The label the image must carry for the entries to find it at boot
    /// (from `/dev/disk/by-label/…`, `LABEL=…` or `label`).
    pub label: Option<String>,
    /// The UUID the image must carry for the entries to find it at boot
    /// (from `/dev/disk/by-uuid/…` or `UUID=…`).
    pub uuid: Option<String>,
}

/// A `fileSystems` definition that cannot be turned into a layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NixosError {
    /// Malformed JSON or a field of the wrong type.
    #[error("{line}:{column}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field path, e.g. `/nix.options[0]` (empty at top level).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A list entry without `mountPoint`.
    #[error("fileSystems entry {index} has no mountPoint")]
    MissingMountPoint {
        /// 0-based position in the list.
        index: usize,
    },
    /// A mount point is not absolute and normalized.
    #[error("fileSystems entry {mountpoint:?}: mount point {source}")]
    BadMountpoint {
        /// The mount point as given.
        mountpoint: String,
        /// What is wrong.
        source: ImagePathError,
    },
    /// No device was given and the btrfs entries are on several.
    #[error("the btrfs entries of fileSystems are on several devices ({}); say which one is the image with --label or --uuid", devices.join(", "))]
    AmbiguousDevice {
        /// The devices found.
        devices: Vec<String>,
    },
    /// No btrfs entry is on the image device.
    #[error("fileSystems has no btrfs entry on the image device ({device}); check --label/--uuid against the device of the btrfs entries")]
    NoBtrfsOnDevice {
        /// The image device, described.
        device: String,
    },
    /// The image's btrfs entries mount only the top level.
    #[error("fileSystems has no btrfs entry with a subvol= option on the image device ({device}); add subvol=NAME to the entries that should become subvolumes")]
    NoSubvolumes {
        /// The image device, described.
        device: String,
    },
    /// A `subvolid=` option.
    #[error("fileSystems entry {mountpoint}: {option} names a subvolume by id, which is not stable across builds; use subvol=NAME")]
    SubvolId {
        /// The entry's mount point.
        mountpoint: String,
        /// The option as written.
        option: String,
    },
    /// A `subvol=` path below another subvolume.
    #[error("fileSystems entry {mountpoint}: subvol={subvol} is nested; rootbox puts every subvolume at the top level of the filesystem, so use a single name such as subvol=@{}", subvol.rsplit('/').next().unwrap_or_default().trim_start_matches('@'))]
    NestedSubvol {
        /// The entry's mount point.
        mountpoint: String,
        /// The subvol value as written.
        subvol: String,
    },
    /// `/` is the filesystem's top level.
    #[error("fileSystems mounts the top level of the image as / (no subvol= option); rootbox needs a subvolume for / (add subvol=@ and it becomes the default subvolume) or a tmpfs /")]
    TopLevelRoot,
    /// The resulting subvolumes do not form a valid layout.
    #[error("fileSystems: {0}")]
    Layout(#[from] LayoutError),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsEntry {
    #[serde(default)]
    mount_point: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    fs_type: Option<String>,
    #[serde(default)]
    options: Option<Vec<String>>,
    #[serde(default)]
    label: Option<String>,
}

impl FsEntry {
    fn dev_id(&self) -> Option<DevId> {
        match (&self.device, &self.label) {
            (Some(d), _) => Some(DevId::parse(d)),
            (None, Some(l)) => Some(DevId::Label(l.clone())),
            (None, None) => None,
        }
    }

    fn is_btrfs(&self) -> bool {
        self.fs_type.as_deref() == Some("btrfs")
    }
}

/// The entries with their attribute names (`None` in the list form).
struct Entries(Vec<(Option<String>, FsEntry)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object from mount point to entry, or a list of entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, FsEntry>()? {
                    out.push((Some(k), v));
                }
                Ok(Entries(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<FsEntry>()? {
                    out.push((None, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_entries(json: &str) -> Result<Vec<(Option<String>, FsEntry)>, NixosError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let entries: Entries = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let full = inner.to_string();
        let suffix = format!(" at line {} column {}", inner.line(), inner.column());
        NixosError::Json {
            line: inner.line(),
            column: inner.column(),
            field: if field == "." { String::new() } else { field },
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
        }
    })?;
    Ok(entries.0)
}

/// The entries with their mount points (`mountPoint`, else the attribute
/// name), each checked as an image path.
fn with_mountpoints(
    entries: Vec<(Option<String>, FsEntry)>,
) -> Result<Vec<(String, FsEntry)>, NixosError> {
    let mut named = Vec::with_capacity(entries.len());
    for (index, (key, entry)) in entries.into_iter().enumerate() {
        let mountpoint = entry
            .mount_point
            .clone()
            .or(key)
            .ok_or(NixosError::MissingMountPoint { index })?;
        check_image_path(&mountpoint).map_err(|source| NixosError::BadMountpoint {
            mountpoint: mountpoint.clone(),
            source,
        })?;
        named.push((mountpoint, entry));
    }
    Ok(named)
}

/// The image's device identifiers, and how to name them in errors: `dev`
/// if given, else the one device every btrfs entry is on.
fn image_device(
    named: &[(String, FsEntry)],
    dev: &ImageDevice,
) -> Result<(Vec<DevId>, String), NixosError> {
    if dev.is_empty() {
        let mut found: Vec<DevId> = Vec::new();
        for id in named
            .iter()
            .filter(|(_, e)| e.is_btrfs())
            .filter_map(|(_, e)| e.dev_id())
        {
            if !found.contains(&id) {
                found.push(id);
            }
        }
        if found.len() > 1 {
            return Err(NixosError::AmbiguousDevice {
                devices: found.iter().map(ToString::to_string).collect(),
            });
        }
        let desc = found
            .first()
            .map_or("none found".to_owned(), ToString::to_string);
        Ok((found, desc))
    } else {
        Ok((dev.ids(), dev.to_string()))
    }
}

/// An entry's options split into its subvolume name (empty for the top
/// level) and the other options; `subvolid=` other than 5 and nested
/// subvolumes are refused.
fn split_options<'e>(mp: &str, e: &'e FsEntry) -> Result<(&'e str, Vec<String>), NixosError> {
    let mut subvol = None;
    let mut rest = Vec::new();
    for opt in e.options.iter().flatten() {
        if let Some(v) = opt.strip_prefix("subvol=") {
            subvol = Some(v);
        } else if let Some(id) = opt.strip_prefix("subvolid=") {
            if id != "5" {
                return Err(NixosError::SubvolId {
                    mountpoint: mp.to_owned(),
                    option: opt.clone(),
                });
            }
        } else {
            rest.push(opt.clone());
        }
    }
    let name = subvol.map(|s| s.trim_matches('/')).unwrap_or_default();
    if name.contains('/') {
        return Err(NixosError::NestedSubvol {
            mountpoint: mp.to_owned(),
            subvol: subvol.unwrap_or_default().to_owned(),
        });
    }
    Ok((name, rest))
}

/// Turns `fileSystems` JSON into a subvolume layout; see the module
/// documentation for the rules.
pub fn from_nixos_file_systems(json: &str, dev: &ImageDevice) -> Result<NixosLayout, NixosError> {
    let named = with_mountpoints(parse_entries(json)?)?;

    let (ids, device_desc) = image_device(&named, dev)?;
    let labels: Vec<&str> = ids
        .iter()
        .filter_map(|i| match i {
            DevId::Label(l) => Some(l.as_str()),
            _ => None,
        })
        .collect();

    let mut out = NixosLayout::default();
    let mut on_device = 0;
    for (mp, e) in &named {
        let fs_type = e.fs_type.as_deref().unwrap_or("unset");
        if fs_type == "tmpfs" && mp == "/" {
            out.root_is_tmpfs = true;
            continue;
        }
        if !e.is_btrfs() {
            out.ignored
                .push(format!("{mp}: fsType {fs_type}, not btrfs"));
            continue;
        }
        let id = e.dev_id();
        let on_image = id.as_ref().is_some_and(|i| ids.contains(i))
            || e.label.as_deref().is_some_and(|l| labels.contains(&l));
        if !on_image {
            let where_ = id.map_or("no device".to_owned(), |i| i.to_string());
            out.ignored
                .push(format!("{mp}: btrfs on another device ({where_})"));
            continue;
        }
        on_device += 1;
        match id {
            Some(DevId::Label(l)) => out.label = Some(l),
            Some(DevId::Uuid(u)) => out.uuid = Some(u),
            _ => {}
        }
        if let Some(l) = &e.label {
            out.label = Some(l.clone());
        }

        let (name, rest) = split_options(mp, e)?;
        if name.is_empty() {
            if mp == "/" {
                return Err(NixosError::TopLevelRoot);
            }
            out.ignored.push(format!(
                "{mp}: mounts the top level of the image (no subvolume to create)"
            ));
            continue;
        }
        out.subvolumes.push(SubvolumeSpec {
            name: name.to_owned(),
            mountpoint: mp.clone(),
            kind: if mp == "/" {
                SubvolKind::Default
            } else {
                SubvolKind::Rw
            },
            inode_flags: Vec::new(),
        });
        if !rest.is_empty() {
            out.mount_options.push((mp.clone(), rest));
        }
    }
    if on_device == 0 {
        return Err(NixosError::NoBtrfsOnDevice {
            device: device_desc,
        });
    }
    if out.subvolumes.is_empty() {
        return Err(NixosError::NoSubvolumes {
            device: device_desc,
        });
    }
    Layout::new(&out.subvolumes)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(l: &str) -> ImageDevice {
        ImageDevice {
            label: Some(l.into()),
            ..Default::default()
        }
    }

    fn entry(dev: &str, ty: &str, opts: &[&str]) -> String {
        let opts: Vec<String> = opts.iter().map(|o| format!("{o:?}")).collect();
        format!(
            r#"{{"device": {dev:?}, "fsType": {ty:?}, "options": [{}]}}"#,
            opts.join(",")
        )
    }

    #[test]
    fn device_forms_match() {
        let dev = ImageDevice {
            label: Some("nixos".into()),
            uuid: Some("ABCD-1".into()),
            device: Some("/dev/vda2".into()),
        };
        for d in [
            "/dev/disk/by-label/nixos",
            "LABEL=nixos",
            "/dev/disk/by-uuid/abcd-1",
            "UUID=ABCD-1",
            "/dev/vda2",
        ] {
            let json = format!(r#"{{"/": {}}}"#, entry(d, "btrfs", &["subvol=@"]));
            let l = from_nixos_file_systems(&json, &dev).unwrap();
            assert_eq!(l.subvolumes.len(), 1, "{d}");
        }
        let json = r#"{"/": {"label": "nixos", "fsType": "btrfs", "options": ["subvol=@"]}}"#;
        let l = from_nixos_file_systems(json, &label("nixos")).unwrap();
        assert_eq!(l.label.as_deref(), Some("nixos"));
        let e = from_nixos_file_systems(json, &label("other")).unwrap_err();
        assert_eq!(
            e,
            NixosError::NoBtrfsOnDevice {
                device: "label=other".into()
            }
        );
    }

    #[test]
    fn infers_single_device_and_required_uuid() {
        let json = format!(
            r#"{{"/": {}, "/nix": {}, "/boot": {}}}"#,
            entry("/dev/disk/by-uuid/1234-AB", "btrfs", &["subvol=@"]),
            entry(
                "UUID=1234-ab",
                "btrfs",
                &["subvol=@nix", "compress=zstd", "noatime"]
            ),
            entry("/dev/disk/by-label/ESP", "vfat", &[]),
        );
        let l = from_nixos_file_systems(&json, &ImageDevice::default()).unwrap();
        assert_eq!(l.uuid.as_deref(), Some("1234-ab"));
        assert_eq!(l.subvolumes[0].kind, SubvolKind::Default);
        assert_eq!(l.subvolumes[1].kind, SubvolKind::Rw);
        assert_eq!(
            l.mount_options,
            vec![(
                "/nix".to_owned(),
                vec!["compress=zstd".to_owned(), "noatime".to_owned()]
            )]
        );
        assert_eq!(l.ignored, vec!["/boot: fsType vfat, not btrfs"]);
    }

    #[test]
    fn ambiguous_device() {
        let json = format!(
            r#"{{"/": {}, "/data": {}}}"#,
            entry("/dev/sda1", "btrfs", &["subvol=@"]),
            entry("/dev/sdb1", "btrfs", &["subvol=@data"]),
        );
        let e = from_nixos_file_systems(&json, &ImageDevice::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("device=/dev/sda1, device=/dev/sdb1") && e.contains("--label"),
            "{e}"
        );
        let l = from_nixos_file_systems(
            &json,
            &ImageDevice {
                device: Some("/dev/sdb1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.subvolumes[0].name, "@data");
        assert_eq!(
            l.ignored,
            vec!["/: btrfs on another device (device=/dev/sda1)"]
        );
    }

    #[test]
    fn top_level_mounts() {
        let json = format!(
            r#"{{"/": {}, "/mnt/pool": {}, "/mnt/id5": {}}}"#,
            entry("LABEL=x", "btrfs", &["subvol=@"]),
            entry("LABEL=x", "btrfs", &[]),
            entry("LABEL=x", "btrfs", &["subvolid=5"]),
        );
        let l = from_nixos_file_systems(&json, &label("x")).unwrap();
        assert_eq!(l.subvolumes.len(), 1);
        assert_eq!(l.ignored.len(), 2);
        let json = format!(r#"{{"/": {}}}"#, entry("LABEL=x", "btrfs", &["subvol=/"]));
        assert_eq!(
            from_nixos_file_systems(&json, &label("x")).unwrap_err(),
            NixosError::TopLevelRoot
        );
        let json = format!(r#"{{"/pool": {}}}"#, entry("LABEL=x", "btrfs", &[]));
        let e = from_nixos_file_systems(&json, &label("x")).unwrap_err();
        assert!(matches!(e, NixosError::NoSubvolumes { .. }), "{e}");
    }

    #[test]
    fn nested_subvol_and_bad_mountpoint() {
        let json = format!(
            r#"{{"/home": {}}}"#,
            entry("LABEL=x", "btrfs", &["subvol=@/home"])
        );
        let e = from_nixos_file_systems(&json, &label("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("top level") && e.contains("subvol=@home"), "{e}");
        let json = format!(
            r#"{{"/home/": {}}}"#,
            entry("LABEL=x", "btrfs", &["subvol=@home"])
        );
        let e = from_nixos_file_systems(&json, &label("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("write \"/home\""), "{e}");
        let e = from_nixos_file_systems(r#"[{"fsType": "btrfs"}]"#, &label("x")).unwrap_err();
        assert_eq!(e, NixosError::MissingMountPoint { index: 0 });
    }

    #[test]
    fn duplicate_subvolume_is_a_layout_error() {
        let json = r#"[{"mountPoint": "/", "device": "LABEL=x", "fsType": "btrfs", "options": ["subvol=@"]},
                {"mountPoint": "/mnt", "device": "LABEL=x", "fsType": "btrfs", "options": ["subvol=@"]}]"#;
        let e = from_nixos_file_systems(json, &label("x")).unwrap_err();
        assert_eq!(
            e,
            NixosError::Layout(LayoutError::DuplicateName("@".into()))
        );
    }

    #[test]
    fn json_errors_have_position_and_field() {
        let e = from_nixos_file_systems("{\"/\": {\"options\": \"subvol=@\"}}", &label("x"))
            .unwrap_err();
        match e {
            NixosError::Json {
                line,
                field,
                message,
                ..
            } => {
                assert_eq!(line, 1);
                assert_eq!(field, "/.options");
                assert!(message.contains("expected a sequence"), "{message}");
            }
            other => panic!("{other}"),
        }
        let e = from_nixos_file_systems("42", &label("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("an object from mount point to entry"), "{e}");
    }
}
