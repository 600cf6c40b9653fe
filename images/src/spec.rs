//! The image spec: what a build should produce, read from JSON (the CLI
//! flags set the same fields).
//!
//! ```json
//! {
//!   "label": "nixos",
//!   "size": "auto",
//!   "headroom": "256M",
//!   "compress": "zstd:3",
//!   "rootfs": "./root",
//!   "closure": "./closure-info",
//!   "registration": "/nix/nix-path-registration",
//!   "subvolumes": [
//!     {"name": "@nix", "mountpoint": "/nix"},
//!     {"name": "@", "mountpoint": "/", "type": "default"}
//!   ]
//! }
//! ```
//!
//! Errors point at the file, line and column and the field, e.g.
//! `spec.json:4:13: subvolumes[1].mountpoint: invalid type: integer, expected a string`.
//! Field values are checked as they are read (sizes, UUID, compression,
//! label); the subvolume layout itself is checked by
//! [`Layout::new`](crate::layout::Layout::new).
//!
//! Two parts live in modules of their own and are re-exported here: the
//! subvolumes ([`SubvolumeSpec`] and its CLI form, `spec/subvolume.rs`) and
//! the text-valued [`Uuid`] and [`Compress`] (`spec/values.rs`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fs::vfat::{self, VfatError};
use crate::image_path::check_image_path;
use crate::size::{ByteSize, Size};

mod subvolume;
mod values;
pub use subvolume::{InodeFlag, SubvolArgError, SubvolKind, SubvolumeSpec};
pub use values::{Compress, Uuid, UuidError};

/// A complete image spec. Unknown JSON keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// The filesystem to make: btrfs (the default), ext4, erofs, squashfs
    /// or vfat.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Filesystem label (at most 255 bytes, no NUL).
    #[serde(
        default,
        deserialize_with = "de_label",
        skip_serializing_if = "Option::is_none"
    )]
    pub label: Option<String>,
    /// Filesystem UUID; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// Size of the filesystem.
    #[serde(default)]
    pub size: Size,
    /// Free space added on top of the content when `size` is `auto`.
    #[serde(default)]
    pub headroom: ByteSize,
    /// Compression applied to the files as they are copied in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<Compress>,
    /// The populated root filesystem tree to copy in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    /// A nixpkgs `closureInfo` directory or a file listing store paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure: Option<PathBuf>,
    /// The Nix store directory the closure's paths live in
    /// (JSON key `storeDir`, default `/nix/store`).
    #[serde(default = "default_store_dir")]
    pub store_dir: PathBuf,
    /// Where in the image to put the closure's registration (an absolute
    /// image path such as `/nix/nix-path-registration`).
    #[serde(
        default,
        deserialize_with = "de_image_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub registration: Option<String>,
    /// The subvolumes to create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subvolumes: Vec<SubvolumeSpec>,
    /// A NixOS `fileSystems` JSON file to take the subvolumes from
    /// (JSON key `fileSystems`); excludes `subvolumes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_systems: Option<PathBuf>,
    /// An ownership manifest file ([`crate::owners`]): owners and modes
    /// applied to the image after mkfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<PathBuf>,
    /// Whether mkfs clones file data from the sources (`--reflink`)
    /// instead of copying it: `auto` (default), `never` or `always`.
    #[serde(default)]
    pub reflink: ReflinkMode,
}

/// When rootbox passes `mkfs.btrfs --reflink` (btrfs-progs 6.16.1), which
/// clones the file data from the sources into the image instead of
/// copying it; that needs the sources and the image on one btrfs or XFS
/// filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReflinkMode {
    /// When mkfs has it and every source shares the image's filesystem;
    /// otherwise copy, and say why in the report.
    #[default]
    Auto,
    /// Always copy.
    Never,
    /// Clone, or refuse to build when that cannot work.
    Always,
}

impl ReflinkMode {
    /// The spelling the spec and `--reflink` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ReflinkMode::Auto => "auto",
            ReflinkMode::Never => "never",
            ReflinkMode::Always => "always",
        }
    }
}

impl fmt::Display for ReflinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReflinkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [ReflinkMode::Auto, ReflinkMode::Never, ReflinkMode::Always]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown reflink mode {s:?}; expected auto, never or always"))
    }
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("/nix/store")
}

/// The filesystem type of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// btrfs, made with `mkfs.btrfs --rootdir`.
    #[default]
    Btrfs,
    /// ext4, made with `mkfs.ext4 -d` ([`crate::fs::ext4`]).
    Ext4,
    /// erofs, made with `mkfs.erofs` ([`crate::fs::erofs`]).
    Erofs,
    /// squashfs, made with `mksquashfs` ([`crate::fs::squashfs`]).
    Squashfs,
    /// vfat (FAT12/16/32) from a directory, made with `mkfs.vfat` and
    /// mtools ([`crate::fs::vfat`]): no owners, modes or links; for EFI
    /// system and firmware partitions.
    Vfat,
}

impl Filesystem {
    /// The filesystem of [`crate::fs::Filesystem`] (made from the
    /// layout's one root by the tree backend), or `None` for btrfs and
    /// vfat.
    pub fn other(self) -> Option<crate::fs::Filesystem> {
        match self {
            Filesystem::Btrfs | Filesystem::Vfat => None,
            Filesystem::Ext4 => Some(crate::fs::Filesystem::Ext4),
            Filesystem::Erofs => Some(crate::fs::Filesystem::Erofs),
            Filesystem::Squashfs => Some(crate::fs::Filesystem::Squashfs),
        }
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Filesystem::Btrfs => "btrfs",
            Filesystem::Ext4 => "ext4",
            Filesystem::Erofs => "erofs",
            Filesystem::Squashfs => "squashfs",
            Filesystem::Vfat => "vfat",
        })
    }
}

impl FromStr for Filesystem {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "btrfs" => Ok(Filesystem::Btrfs),
            "ext4" => Ok(Filesystem::Ext4),
            "erofs" => Ok(Filesystem::Erofs),
            "squashfs" => Ok(Filesystem::Squashfs),
            "vfat" => Ok(Filesystem::Vfat),
            _ => Err(format!(
                "unknown filesystem {s:?}: use btrfs, ext4, erofs, squashfs or vfat"
            )),
        }
    }
}

/// Serializes and deserializes a `FromStr` + `Display` type as a JSON string.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Uuid);
serde_via_str!(Compress);

/// Checks a filesystem label: at most 255 bytes, no NUL.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.len() > 255 {
        return Err(format!(
            "label is {} bytes long; mkfs.btrfs allows at most 255",
            label.len()
        ));
    }
    if label.contains('\0') {
        return Err("label contains a NUL byte".into());
    }
    Ok(())
}

fn de_label<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let label = Option::<String>::deserialize(d)?;
    if let Some(l) = &label {
        check_label(l).map_err(serde::de::Error::custom)?;
    }
    Ok(label)
}

fn de_image_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let path = Option::<String>::deserialize(d)?;
    if let Some(p) = &path {
        check_image_path(p).map_err(serde::de::Error::custom)?;
    }
    Ok(path)
}

/// A spec that could not be read or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("cannot read spec {}: {source}", path.display())]
    Io {
        /// The spec file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has a wrong type or value.
    #[error("{origin}:{line}:{column}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Json {
        /// Where the spec came from (its file name, or e.g. `<command line>`).
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The field path, e.g. `subvolumes[1].mountpoint` (empty at top level).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two fields that exclude each other are both set, or a field value
    /// contradicts another.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the spec came from.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Spec {
    /// Reads a spec file. Relative paths in it (`rootfs`, `closure`,
    /// `fileSystems`, `owners`) are taken relative to the directory that
    /// holds the spec file, not the current directory.
    pub fn from_json_file(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut spec = Spec::from_json_str(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new(""));
        spec.resolve_relative_paths(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        });
        Ok(spec)
    }

    /// Parses a spec from JSON text. `origin` names it in errors (a file
    /// name, or e.g. `<stdin>`). Relative paths are left as they are; see
    /// [`Spec::resolve_relative_paths`].
    pub fn from_json_str(text: &str, origin: &str) -> Result<Spec, SpecError> {
        // serde would also take a list of the fields' values, in order, and
        // then complain about the first one: say plainly what is wrong.
        let first = text.char_indices().find(|(_, c)| !c.is_ascii_whitespace());
        if let Some((i, c)) = first.filter(|&(_, c)| c != '{') {
            let before = &text[..i];
            let found = match c {
                '[' => "a list".to_string(),
                '"' => "a string".to_string(),
                c if c == '-' || c.is_ascii_digit() => "a number".to_string(),
                c => format!("{c:?}"),
            };
            return Err(SpecError::Json {
                origin: origin.to_owned(),
                line: before.matches('\n').count() + 1,
                column: before[before.rfind('\n').map_or(0, |n| n + 1)..].chars().count() + 1,
                field: String::new(),
                message: format!(
                    "expected a JSON object such as {{\"rootfs\": \"./root\", \"subvolumes\": [...]}}, found {found}"
                ),
            });
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = json_message(&inner);
            SpecError::Json {
                origin: origin.to_owned(),
                line: inner.line(),
                column: inner.column(),
                field: if field == "." { String::new() } else { field },
                message,
            }
        })?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Makes the relative paths (`rootfs`, `closure`, `fileSystems`,
    /// `owners`) relative to `base` instead.
    pub fn resolve_relative_paths(&mut self, base: &Path) {
        for p in [
            &mut self.rootfs,
            &mut self.closure,
            &mut self.file_systems,
            &mut self.owners,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// What a vfat build cannot take, refused by field before anything is
    /// made: FAT holds files and directories from one directory (`rootfs`),
    /// with no owners, modes, links or subvolumes; its volume id is 32
    /// bits, not a UUID; its label at most 11 characters.
    pub fn check_vfat(&self) -> Result<(), VfatError> {
        let refuse = |field, why| Err(VfatError::Unsupported { field, why });
        if self.rootfs.is_none() {
            return refuse(
                "rootfs",
                "a vfat filesystem is made from a directory: give it as \"rootfs\" (--rootfs DIR)",
            );
        }
        if !self.subvolumes.is_empty() || self.file_systems.is_some() {
            return refuse(
                "subvolumes",
                "only btrfs has subvolumes; remove \"subvolumes\" (and --subvol, --file-systems)",
            );
        }
        if self.closure.is_some() || self.registration.is_some() {
            return refuse(
                "closure",
                "a Nix store needs symlinks, owners and modes, which FAT cannot hold, and an \
                 EFI or firmware partition has no use for one; put the files the firmware \
                 reads (boot loader, kernels) in \"rootfs\"",
            );
        }
        if self.owners.is_some() {
            return refuse(
                "owners",
                "FAT records no owners or modes; remove the ownership manifest",
            );
        }
        if self.compress.is_some() {
            return refuse("compress", "FAT has no compression; remove \"compress\"");
        }
        if self.uuid.is_some() {
            return refuse(
                "uuid",
                "FAT has a 32-bit volume id, not a UUID; remove \"uuid\" (a reproducible \
                 build derives the volume id from its seed; a disk's {\"fat\": …} content \
                 takes \"volumeId\")",
            );
        }
        if self.reflink == ReflinkMode::Always {
            return refuse(
                "reflink",
                "only mkfs.btrfs clones file data; remove \"reflink\"",
            );
        }
        self.label.as_deref().map_or(Ok(()), vfat::check_label)
    }

    /// Checks what no single field can: `subvolumes` and `fileSystems`
    /// exclude each other, and `storeDir` is an absolute, normalized path.
    /// [`Spec::from_json_str`] calls it; call it again after changing
    /// fields (e.g. from command-line flags).
    pub fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let invalid = |message: String| {
            Err(SpecError::Invalid {
                origin: origin.to_owned(),
                message,
            })
        };
        if !self.subvolumes.is_empty() && self.file_systems.is_some() {
            return invalid("both \"subvolumes\" and \"fileSystems\" are given; the layout comes from one of them: remove the other".into());
        }
        match self.store_dir.to_str().map(check_image_path) {
            None => invalid("\"storeDir\" is not valid UTF-8".into()),
            Some(Err(e)) => invalid(format!("\"storeDir\": {e}")),
            Some(Ok(())) if self.store_dir == Path::new("/") => {
                invalid("\"storeDir\" cannot be /".into())
            }
            Some(Ok(())) => Ok(()),
        }
    }
}

/// serde_json's message without its trailing " at line L column C".
fn json_message(e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected end of input (is the JSON truncated?)".into();
    }
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Spec, String> {
        Spec::from_json_str(s, "spec.json").map_err(|e| e.to_string())
    }

    #[test]
    fn design_example_parses() {
        let spec = parse(
            r#"{
  "filesystem": "btrfs",
  "label": "nixos",
  "uuid": "44444444-4444-4444-8888-88888888888A",
  "size": "auto",
  "headroom": "256M",
  "compress": "zstd:3",
  "rootfs": "./root",
  "closure": "./closure-info",
  "registration": "/nix/nix-path-registration",
  "subvolumes": [
    {"name": "@nix", "mountpoint": "/nix"},
    {"name": "@", "mountpoint": "/", "type": "default"}
  ]
}"#,
        )
        .unwrap();
        assert_eq!(spec.label.as_deref(), Some("nixos"));
        assert_eq!(
            spec.uuid.as_ref().unwrap().as_str(),
            "44444444-4444-4444-8888-88888888888a"
        );
        assert_eq!(spec.size, Size::Auto);
        assert_eq!(spec.headroom, ByteSize(256 << 20));
        assert_eq!(spec.compress.unwrap().mkfs_arg(), "zstd:3");
        assert_eq!(spec.store_dir, Path::new("/nix/store"));
        assert_eq!(spec.subvolumes[1].kind, SubvolKind::Default);
        assert_eq!(spec.subvolumes[0].kind, SubvolKind::Rw);
    }

    #[test]
    fn defaults_and_round_trip() {
        let spec = parse("{}").unwrap();
        assert_eq!(spec.filesystem, Filesystem::Btrfs);
        assert_eq!(spec.headroom, ByteSize(0));
        assert_eq!(spec.store_dir, Path::new("/nix/store"));
        assert_eq!(spec.reflink, ReflinkMode::Auto);
        let full = parse(r#"{"label":"x","size":1073741824,"compress":"none","storeDir":"/gnu/store","reflink":"never","subvolumes":[{"name":"@","mountpoint":"/","type":"default-ro"},{"name":"@swap","mountpoint":"/swap","inodeFlags":["nodatacow"]}]}"#).unwrap();
        assert_eq!(full.reflink, ReflinkMode::Never);
        assert_eq!(full.subvolumes[1].inode_flags, [InodeFlag::Nodatacow]);
        let json = serde_json::to_string(&full).unwrap();
        assert!(json.contains("\"inodeFlags\":[\"nodatacow\"]"), "{json}");
        assert!(json.contains("\"size\":\"1G\""), "{json}");
        assert!(json.contains("\"storeDir\":\"/gnu/store\""), "{json}");
        assert!(json.contains("\"type\":\"default-ro\""), "{json}");
        assert_eq!(parse(&json).unwrap(), full);
    }

    #[test]
    fn errors_name_position_and_field() {
        let e = parse("{\n  \"subvolumes\": [\n    {\"name\": \"@\", \"mountpoint\": \"/\"},\n    {\"name\": \"@n\", \"mountpoint\": 4}\n  ]\n}").unwrap_err();
        assert_eq!(
            e,
            "spec.json:4:34: subvolumes[1].mountpoint: invalid type: integer `4`, expected a string"
        );
    }

    #[test]
    fn uuids_are_read_only_in_the_hyphenated_form() {
        let u: Uuid = "44444444-4444-4444-8888-88888888888A".parse().unwrap();
        assert_eq!(u.to_string(), "44444444-4444-4444-8888-88888888888a");
        assert_eq!(u.as_uuid().as_bytes()[15], 0x8a);
        for other in [
            "44444444444444448888888888888888",
            "{44444444-4444-4444-8888-888888888888}",
            "urn:uuid:44444444-4444-4444-8888-888888888888",
            "44444444-4444-4444-8888-88888888888",
            "4444444-44444-4444-8888-888888888888",
        ] {
            let e = other.parse::<Uuid>().unwrap_err();
            assert!(e.to_string().contains("8-4-4-4-12"), "{other}: {e}");
        }
        let mut bytes = [0u8; 16];
        bytes[0] = 0xab;
        bytes[15] = 0x01;
        assert_eq!(
            Uuid::from_bytes(bytes).as_str(),
            "ab000000-0000-0000-0000-000000000001"
        );
    }

    #[test]
    fn specific_messages() {
        for (json, needles) in [
            ("{\"label\": \"x\"", &["spec.json:1:", "truncated"][..]),
            ("{\"lable\": \"x\"}", &["unknown field `lable`", "`label`", "`storeDir`"]),
            ("{\"size\": \"-1G\"}", &["size: ", "negative"]),
            ("{\"size\": \"99999999T\"}", &["size: ", "\"99999999T\"", "too large"]),
            ("{\"headroom\": 1.5}", &["headroom: ", "whole count"]),
            ("{\"uuid\": \"1234\"}", &["uuid: ", "8-4-4-4-12"]),
            ("{\"uuid\": \"4444444g-4444-4444-8888-888888888888\"}", &["uuid: "]),
            ("{\"compress\": \"brotli\"}", &["compress: ", "unknown compression", "zstd[:1..15]"]),
            ("{\"compress\": \"zstd:20\"}", &["levels are 1..15"]),
            ("{\"compress\": \"lzo:3\"}", &["takes no level"]),
            ("{\"filesystem\": \"xfs\"}", &["filesystem: ", "`btrfs`", "`squashfs`"]),
            ("{\"registration\": \"nix-path-registration\"}", &["registration: ", "absolute"]),
            ("{\"subvolumes\": [{\"name\": \"@\", \"mountpoint\": \"/\", \"type\": \"rx\"}]}", &["subvolumes[0].type: ", "`default-ro`"]),
            ("{\"subvolumes\": [{\"name\": \"@\", \"mountpoint\": \"/\", \"inodeFlags\": [\"nocow\"]}]}", &["subvolumes[0].inodeFlags[0]: ", "`nodatacow`"]),
            ("{\"reflink\": \"yes\"}", &["reflink: ", "`always`"]),
            ("{\"subvolumes\": [{\"name\": \"@\"}]}", &["subvolumes[0]: ", "missing field `mountpoint`"]),
            ("{\"subvolumes\": [{\"name\": \"@\", \"mountpoint\": \"/\"}], \"fileSystems\": \"fs.json\"}", &["both"]),
            ("{\"storeDir\": \"store\"}", &["storeDir", "not absolute"]),
            ("{\"storeDir\": \"/nix/store/\"}", &["storeDir", "write \"/nix/store\""]),
            ("{\"storeDir\": \"/\"}", &["cannot be /"]),
        ] {
            let e = parse(json).unwrap_err();
            for n in needles {
                assert!(e.contains(n), "{json}: {e:?} lacks {n:?}");
            }
        }
        let long = format!("{{\"label\": \"{}\"}}", "a".repeat(256));
        assert!(parse(&long).unwrap_err().contains("at most 255"));
        assert!(parse(&format!("{{\"label\": \"{}\"}}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn compress_forms() {
        for (s, arg) in [
            ("zstd", "zstd"),
            ("zstd:1", "zstd:1"),
            ("zstd:15", "zstd:15"),
            ("zlib:9", "zlib:9"),
            ("lzo", "lzo"),
            ("no", "no"),
            ("none", "no"),
        ] {
            assert_eq!(s.parse::<Compress>().unwrap().mkfs_arg(), arg);
        }
        for s in [
            "zstd:0", "zstd:16", "zlib:10", "zstd:", "zstd:x", "lzo:1", "no:1", "", "ZSTD",
        ] {
            assert!(s.parse::<Compress>().is_err(), "{s}");
        }
        assert!(!Compress::No.is_enabled());
        assert!(Compress::Lzo.is_enabled());
    }

    #[test]
    fn subvol_cli() {
        let s = SubvolumeSpec::parse_cli("@nix:/nix").unwrap();
        assert_eq!(
            (s.name.as_str(), s.mountpoint.as_str(), s.kind),
            ("@nix", "/nix", SubvolKind::Rw)
        );
        let s = SubvolumeSpec::parse_cli("@:/:default-ro").unwrap();
        assert_eq!(s.kind, SubvolKind::DefaultRo);
        assert!(s.inode_flags.is_empty());
        let s = SubvolumeSpec::parse_cli("@swap:/swap:nodatacow").unwrap();
        assert_eq!(
            (s.kind, s.inode_flags),
            (SubvolKind::Rw, vec![InodeFlag::Nodatacow])
        );
        let s = SubvolumeSpec::parse_cli("@vm:/vm:ro:nodatasum,nodatacow").unwrap();
        assert_eq!(
            (s.kind, s.inode_flags),
            (
                SubvolKind::Ro,
                vec![InodeFlag::Nodatasum, InodeFlag::Nodatacow]
            )
        );
        for (arg, needle) in [
            ("@nix", "1 ':'-separated"),
            ("a:b:c:d:e", "5 ':'-separated"),
            (":/x", "must not be empty"),
            ("@:/:bogus", "unknown subvolume type"),
            ("@:/:rw:nocow", "unknown inode flag \"nocow\""),
            ("@:/:nodatacow,x", "unknown inode flag \"x\""),
        ] {
            let e = SubvolumeSpec::parse_cli(arg).unwrap_err().to_string();
            assert!(
                e.contains(needle) && e.contains("NAME:MOUNTPOINT[:TYPE][:FLAGS]"),
                "{e}"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_spec_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(
            &path,
            r#"{"rootfs": "./root", "closure": "/abs/ci", "owners": "o.json"}"#,
        )
        .unwrap();
        let spec = Spec::from_json_file(&path).unwrap();
        assert_eq!(spec.rootfs.unwrap(), dir.path().join("./root"));
        assert_eq!(spec.closure.unwrap(), Path::new("/abs/ci"));
        assert_eq!(spec.owners.unwrap(), dir.path().join("o.json"));
        let e = Spec::from_json_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }

    #[test]
    fn a_vfat_spec_refuses_what_fat_has_no_place_for_by_field() {
        let ok = r#"{"filesystem": "vfat", "rootfs": "esp", "label": "ESP", "size": "64M"}"#;
        let spec = Spec::from_json_str(ok, "s.json").unwrap();
        assert_eq!(spec.filesystem, Filesystem::Vfat);
        assert_eq!(spec.filesystem.to_string(), "vfat");
        assert_eq!(spec.check_vfat(), Ok(()));
        for (extra, field) in [
            (r#""closure": "c""#, "\"closure\""),
            (r#""registration": "/nix/r""#, "\"closure\""),
            (r#""owners": "o""#, "\"owners\""),
            (r#""compress": "zstd""#, "\"compress\""),
            (
                r#""uuid": "44444444-4444-4444-8888-888888888888""#,
                "\"uuid\"",
            ),
            (r#""reflink": "always""#, "\"reflink\""),
            (
                r#""subvolumes": [{"name": "@", "mountpoint": "/"}]"#,
                "\"subvolumes\"",
            ),
        ] {
            let json = format!(r#"{{"filesystem": "vfat", "rootfs": "esp", {extra}}}"#);
            let e = Spec::from_json_str(&json, "s.json")
                .unwrap()
                .check_vfat()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{field} cannot be used with vfat")),
                "{e}"
            );
        }
        let no_rootfs = Spec::from_json_str(r#"{"filesystem": "vfat"}"#, "s.json").unwrap();
        assert!(no_rootfs
            .check_vfat()
            .unwrap_err()
            .to_string()
            .contains("\"rootfs\""));
        let long = r#"{"filesystem": "vfat", "rootfs": "esp", "label": "TWELVE CHARS"}"#;
        let e = Spec::from_json_str(long, "s.json").unwrap().check_vfat();
        assert!(e.unwrap_err().to_string().contains("1 to 11"));
    }
}
