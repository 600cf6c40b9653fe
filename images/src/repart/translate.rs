//! A [`Definition`] made into one partition of rootbox's disk spec: the
//! type, label, size, GPT flags (with repart's defaults), and the content
//! (raw blocks, a build of the `CopyFiles=` tree, or a Verity hash tree,
//! which `super::pair_verity` points at its data partition), and the
//! `--split` artifact's name.

use std::path::{Path, PathBuf};

use super::definition::{At, Definition, Minimize, Verity};
use super::error::Problem;
use super::types::{Class, RepartType};
use crate::disk::table::TableKind;
use crate::disk::types::{Attribute, NAMED_TYPES};
use crate::disk::{Content, PartSize, PartitionSpec};
use crate::size::ByteSize;
use crate::spec::{Filesystem, Spec, SubvolKind, SubvolumeSpec};

/// A problem at a line of the file being translated.
pub type Located = (usize, String, Problem);

/// Where paths in the definitions point.
pub struct Paths<'a> {
    /// The root `CopyFiles=` sources are taken below (`--copy-source`).
    pub copy_source: &'a Path,
    /// The definitions directory (`X-Rootbox-Owners=` and
    /// `X-Rootbox-Closure=` are relative to it).
    pub definitions: &'a Path,
}

/// `Type=`, or repart's default, `linux-generic`.
fn kind_of(d: &Definition) -> RepartType {
    d.kind.as_ref().map_or_else(
        || super::types::resolve("linux-generic", "x86-64").expect("built in"),
        |k| k.value.clone(),
    )
}

/// repart's default `SizeMinBytes=`.
const DEFAULT_MIN: u64 = 10 << 20;

fn at<T>(a: &At<T>, key: &str, p: Problem) -> Located {
    (a.line, format!("{key}="), p)
}

fn value(v: impl Into<String>, why: &'static str) -> Problem {
    Problem::Value {
        value: v.into(),
        why,
    }
}

/// The partition `d` describes on a `table` disk; its content is left
/// empty for a Verity hash partition (its pair fills it in).
pub fn partition(
    d: &Definition,
    table: TableKind,
    paths: &Paths,
) -> Result<PartitionSpec, Located> {
    let t = &kind_of(d);
    let name = d
        .label
        .as_ref()
        .map_or_else(|| t.name.clone(), |l| l.value.clone());
    Ok(PartitionSpec {
        name,
        start: None,
        start_sector: d.start_sector.as_ref().map(|s| s.value),
        size: size(d)?,
        headroom: ByteSize(0),
        min_size: min_size(d),
        kind: kind(d, t, table)?,
        attributes: match table {
            TableKind::Gpt => attributes(d, t),
            TableKind::Mbr => no_flags(d)?,
        },
        bootable: false,
        guid: d.uuid.as_ref().map(|u| u.value),
        content: content(d, paths)?,
    })
}

/// The split artifact's name of the partition (`--split`): `SplitName=`
/// with `%t` the type's name (the default), None for `-`.
pub fn split_name(d: &Definition) -> Result<Option<String>, Located> {
    let t = &kind_of(d);
    let Some(s) = &d.split_name else {
        return Ok(Some(t.name.clone()));
    };
    if s.value == "-" {
        return Ok(None);
    }
    let name = super::definition::literal(&s.value.replace("%t", &t.name))
        .map_err(|p| at(s, "SplitName", p))?;
    if name.is_empty() || name.contains('/') {
        return Err(at(
            s,
            "SplitName",
            value(&s.value, "a split name is part of a file name: no '/'"),
        ));
    }
    Ok(Some(name))
}

/// rootbox's name for the type where it has one (so an MBR gets its
/// type byte), else the GUID.
fn kind(d: &Definition, t: &RepartType, table: TableKind) -> Result<String, Located> {
    let named = NAMED_TYPES
        .iter()
        .find(|n| n.gpt.parse().ok() == Some(t.guid));
    match (named, table) {
        (Some(n), TableKind::Mbr) if n.mbr.is_none() => {}
        (Some(n), _) => return Ok(n.name.to_string()),
        (None, TableKind::Gpt) => return Ok(t.guid.to_string()),
        (None, TableKind::Mbr) => {}
    }
    let line = d.kind.as_ref().map_or(0, |k| k.line);
    Err((line, "Type=".into(), value(&t.name, "has no MBR type byte: use esp, xbootldr, swap, home, linux-generic or a root type, or a GPT table")))
}

/// `SizeMinBytes=` equal to `SizeMaxBytes=`: that size (rounded up to
/// 4096 bytes as repart does); otherwise fitted to the content.
fn size(d: &Definition) -> Result<PartSize, Located> {
    match (&d.size_min, &d.size_max) {
        (Some(min), Some(max)) if min.value > max.value => Err(at(
            max,
            "SizeMaxBytes",
            Problem::SizeBelowMin {
                max: max.value,
                min: min.value,
            },
        )),
        (Some(min), Some(max)) if min.value == max.value => {
            Ok(PartSize::Fixed(ByteSize(min.value.div_ceil(4096) * 4096)))
        }
        _ => Ok(PartSize::Auto),
    }
}

/// The least size: `SizeMinBytes=`, or repart's 10M unless minimized.
fn min_size(d: &Definition) -> Option<ByteSize> {
    let min = match (&d.size_min, d.minimize) {
        (Some(m), _) => m.value,
        (None, Some(Minimize::On)) => 0,
        (None, _) => DEFAULT_MIN,
    };
    (min > 0).then(|| ByteSize(min.div_ceil(4096) * 4096))
}

/// GPT flags: `Flags=` (else repart's defaults), then `NoAuto=`,
/// `ReadOnly=`, `GrowFileSystem=` over it.
fn attributes(d: &Definition, t: &RepartType) -> Vec<Attribute> {
    let mut bits = match &d.flags {
        Some(f) => f.value,
        None => {
            // Seen with repart 262: a Verity=data partition is read-only too.
            let ro = t.class == Class::Verity || d.verity.is_some();
            let grow = t.class == Class::Grows && !d.read_only.as_ref().map_or(ro, |r| r.value);
            (u64::from(ro) << 60) | (u64::from(grow) << 59)
        }
    };
    for (set, bit) in [(&d.no_auto, 63), (&d.read_only, 60), (&d.grow, 59)] {
        match set.as_ref().map(|s| s.value) {
            Some(true) => bits |= 1 << bit,
            Some(false) => bits &= !(1 << bit),
            None => {}
        }
    }
    (0..64)
        .filter(|b| bits & (1 << b) != 0)
        .map(Attribute::Bit)
        .collect()
}

/// On MBR: no GPT flag may be asked for.
fn no_flags(d: &Definition) -> Result<Vec<Attribute>, Located> {
    if let Some(f) = &d.flags {
        return Err(at(
            f,
            "Flags",
            value(
                f.value.to_string(),
                "GPT partition flags: an MBR partition has none; drop it or use a GPT table",
            ),
        ));
    }
    for (set, key) in [
        (&d.no_auto, "NoAuto"),
        (&d.read_only, "ReadOnly"),
        (&d.grow, "GrowFileSystem"),
    ] {
        if let Some(s) = set.as_ref().filter(|s| s.value) {
            return Err(at(
                s,
                key,
                value(
                    "yes",
                    "a GPT partition flag: an MBR partition has none; drop it or use a GPT table",
                ),
            ));
        }
    }
    Ok(Vec::new())
}

/// What the partition holds.
fn content(d: &Definition, paths: &Paths) -> Result<Option<Content>, Located> {
    if let Some(b) = &d.copy_blocks {
        if let Some(f) = d.format.as_ref() {
            return Err(at(
                f,
                "Format",
                Problem::Conflict("CopyBlocks= and Format= exclude each other (as in repart)"),
            ));
        }
        return Ok(Some(Content::Raw(b.value.clone())));
    }
    if matches!(
        d.verity,
        Some(At {
            value: Verity::Hash,
            ..
        })
    ) {
        if let Some(f) = &d.format {
            return Err(at(
                f,
                "Format",
                Problem::Conflict(
                    "a Verity=hash partition holds the hash tree rootbox makes: drop Format=",
                ),
            ));
        }
        return Ok(None);
    }
    let fs = match (&d.format, d.copy_files.first()) {
        (Some(f), _) => filesystem(f)?,
        // repart's default when CopyFiles= comes without Format=.
        (None, Some(_)) => Filesystem::Ext4,
        (None, None) => return Ok(None),
    };
    let mut spec = Spec {
        filesystem: fs,
        // mkfs.erofs 1.5 (bookworm) and squashfs set no label.
        label: d
            .label
            .as_ref()
            .map(|l| l.value.clone())
            .filter(|_| !matches!(fs, Filesystem::Erofs | Filesystem::Squashfs)),
        owners: d.owners.as_ref().map(|o| paths.definitions.join(&o.value)),
        closure: d.closure.as_ref().map(|c| paths.definitions.join(&c.value)),
        registration: d.registration.as_ref().map(|r| r.value.clone()),
        store_dir: PathBuf::from("/nix/store"),
        ..Spec::default()
    };
    tree(d, paths.copy_source, &mut spec)?;
    if fs == Filesystem::Vfat {
        spec.check_vfat()
            .map_err(|e| match (&spec.rootfs, &d.label) {
                (None, _) => (
                    d.format.as_ref().map_or(0, |f| f.line),
                    "Format=".into(),
                    Problem::Conflict(
                        "a vfat partition is made from a tree: add CopyFiles=SOURCE:/",
                    ),
                ),
                (Some(_), Some(l)) => at(l, "Label", Problem::Vfat(Box::new(e))),
                (Some(_), None) => (
                    d.format.as_ref().map_or(0, |f| f.line),
                    "Format=".into(),
                    Problem::Vfat(Box::new(e)),
                ),
            })?;
    }
    Ok(Some(Content::Build(Box::new(spec))))
}

fn filesystem(f: &At<String>) -> Result<Filesystem, Located> {
    match f.value.as_str() {
        "vfat" => Ok(Filesystem::Vfat),
        "ext4" => Ok(Filesystem::Ext4),
        "btrfs" => Ok(Filesystem::Btrfs),
        "erofs" => Ok(Filesystem::Erofs),
        "squashfs" => Ok(Filesystem::Squashfs),
        "swap" => Err(at(f, "Format", value("swap", "rootbox makes no swap areas: drop Format= to leave the partition empty (size it with SizeMinBytes=) and run mkswap at first boot"))),
        other => Err(at(f, "Format", value(other, "rootbox builds vfat, ext4, btrfs, erofs and squashfs"))),
    }
}

/// `CopyFiles=` (and `Subvolumes=`, `DefaultSubvolume=`,
/// `ExcludeFiles=`) as the build's one rootfs and its subvolumes.
fn tree(d: &Definition, base: &Path, spec: &mut Spec) -> Result<(), Located> {
    let below = |src: &str| -> PathBuf { base.join(src.trim_start_matches('/')) };
    if d.subvolumes.is_empty() {
        if let Some(s) = d.default_subvolume.as_ref().filter(|s| s.value != "/") {
            return Err(at(
                s,
                "DefaultSubvolume",
                value(&s.value, "is not among Subvolumes="),
            ));
        }
        if let Some(m) = d.make_dirs.first() {
            return Err(at(m, "MakeDirectories", value(&m.value, "rootbox builds each filesystem from its tree as it is: create the directory in the CopyFiles= source, owned and with the mode it needs")));
        }
        if let Some(e) = d.exclude.first() {
            return Err(at(e, "ExcludeFiles", value(&e.value, "rootbox cannot drop files from a tree it copies: remove them from the CopyFiles= source")));
        }
        match d.copy_files.as_slice() {
            [] => {}
            [c] if c.value.target == "/" => spec.rootfs = Some(below(&c.value.source)),
            [c] => return Err(at(c, "CopyFiles", value(format!("{}:{}", c.value.source, c.value.target), "rootbox builds a partition from one tree copied to its top: write CopyFiles=SOURCE:/ (with SOURCE the directory to appear at /)"))),
            [_, c, ..] => return Err(at(c, "CopyFiles", Problem::Conflict("rootbox builds a partition from one tree: give one CopyFiles=SOURCE:/ (or, on btrfs, one per subvolume with Subvolumes=)"))),
        }
        if spec.filesystem == Filesystem::Btrfs {
            // rootbox's btrfs always has subvolumes: the tree goes into @,
            // the default subvolume, so a mount without subvol= sees what
            // repart's flat filesystem holds (as nix/make-btrfs-fs.nix).
            spec.subvolumes = vec![SubvolumeSpec {
                name: "@".into(),
                mountpoint: "/".into(),
                kind: SubvolKind::Default,
                inode_flags: Vec::new(),
            }];
        }
        return Ok(());
    }
    if spec.filesystem != Filesystem::Btrfs {
        return Err(at(
            &d.subvolumes[0],
            "Subvolumes",
            Problem::Conflict("only btrfs has subvolumes: use Format=btrfs or drop Subvolumes="),
        ));
    }
    spec.rootfs = Some(base.to_path_buf());
    spec.subvolumes = subvolumes(d)?;
    make_dirs(d)
}

/// `MakeDirectories=` naming anything but a subvolume (which rootbox
/// makes anyway; repart 262 with btrfs-progs 7.3 needs the line to make
/// its subvolumes) is refused: rootbox builds from the tree as it is.
fn make_dirs(d: &Definition) -> Result<(), Located> {
    match d.make_dirs.iter().find(|m| !d.subvolumes.iter().any(|s| s.value == m.value)) {
        Some(m) => Err(at(m, "MakeDirectories", value(&m.value, "rootbox builds each filesystem from its tree as it is: create the directory in the CopyFiles= source, owned and with the mode it needs (only Subvolumes= paths may be named here)"))),
        None => Ok(()),
    }
}

/// Each subvolume `/NAME` filled by the one `CopyFiles=SOURCE:/NAME`:
/// rootbox's subvolume `NAME` with mount point `SOURCE`. A source below
/// another's stays an empty directory in the outer subvolume, which is
/// what repart makes only with `ExcludeFiles=SOURCE/`: rootbox asks for
/// it so the two agree.
fn subvolumes(d: &Definition) -> Result<Vec<SubvolumeSpec>, Located> {
    let mut out = Vec::new();
    for s in &d.subvolumes {
        let name = s.value.trim_start_matches('/');
        if name.is_empty() || name.contains('/') {
            return Err(at(
                s,
                "Subvolumes",
                value(
                    &s.value,
                    "rootbox puts subvolumes at the top level: write /NAME (e.g. /@home)",
                ),
            ));
        }
        let copies: Vec<_> = d
            .copy_files
            .iter()
            .filter(|c| c.value.target == s.value)
            .collect();
        let [c] = copies.as_slice() else {
            return Err(at(s, "Subvolumes", value(&s.value, "rootbox fills each subvolume from one tree: give exactly one CopyFiles=SOURCE:/NAME for it")));
        };
        let default = d
            .default_subvolume
            .as_ref()
            .is_some_and(|x| x.value == s.value);
        out.push(SubvolumeSpec {
            name: name.to_owned(),
            mountpoint: c.value.source.clone(),
            kind: if default {
                SubvolKind::Default
            } else {
                SubvolKind::Rw
            },
            inode_flags: Vec::new(),
        });
    }
    if let Some(c) = d
        .copy_files
        .iter()
        .find(|c| !d.subvolumes.iter().any(|s| s.value == c.value.target))
    {
        return Err(at(c, "CopyFiles", value(&c.value.target, "with Subvolumes=, rootbox copies trees into subvolumes only: make the target one of Subvolumes=")));
    }
    if let Some(s) = d
        .default_subvolume
        .as_ref()
        .filter(|s| s.value != "/" && !d.subvolumes.iter().any(|x| x.value == s.value))
    {
        return Err(at(
            s,
            "DefaultSubvolume",
            value(&s.value, "is not among Subvolumes="),
        ));
    }
    check_excludes(d, &out)?;
    Ok(out)
}

/// Every nested mount point excluded from the outer tree with
/// `ExcludeFiles=SOURCE/`, and nothing else excluded.
fn check_excludes(d: &Definition, subvols: &[SubvolumeSpec]) -> Result<(), Located> {
    let masks: Vec<String> = subvols
        .iter()
        .filter(|s| {
            subvols.iter().any(|o| {
                o.mountpoint != s.mountpoint
                    && (o.mountpoint == "/"
                        || s.mountpoint.starts_with(&format!("{}/", o.mountpoint)))
            })
        })
        .map(|s| format!("{}/", s.mountpoint))
        .collect();
    if let Some(e) = d.exclude.iter().find(|e| !masks.contains(&e.value)) {
        return Err(at(e, "ExcludeFiles", value(&e.value, "rootbox drops no files from a tree; it only leaves the mount points of inner subvolumes empty (ExcludeFiles=SOURCE/ of another CopyFiles=)")));
    }
    if let Some(m) = masks
        .iter()
        .find(|m| !d.exclude.iter().any(|e| &e.value == *m))
    {
        let line = d.copy_files.first().map_or(0, |c| c.line);
        return Err((
            line,
            "CopyFiles=".into(),
            Problem::NotExcluded {
                path: m.trim_end_matches('/').to_owned(),
            },
        ));
    }
    Ok(())
}
