//! The first phase, in the parent and before any namespace exists: every
//! input read and checked — the layout (from the spec or a NixOS
//! `fileSystems`), the ownership manifest, the rootfs (a directory, or a
//! tar archive unpacked into scratch space), the closure and its
//! registration — and turned into the [`StageJob`](super::job::StageJob)'s
//! roots. Bad input stops the build here, before anything is staged.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rootbox_images::closure::Closure;
use rootbox_images::layout::{list_fs_dir, Layout};
use rootbox_images::nixos::{from_nixos_file_systems, ImageDevice};
use rootbox_images::owners::Manifest;
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Filesystem, Spec, SubvolumeSpec, Uuid};
use rootbox_sandbox::MapMode;

use super::job::Root;
use super::request::Options;
use super::tarball::{self, TarOwners};
use crate::output::{scratch_dir, temp_dir, Held, Target};

/// Where NixOS's stage 2 looks for the store registration to load at first
/// boot (`nix-store --load-db`).
const NIXOS_REGISTRATION: &str = "/nix-path-registration";
/// Where it goes when `/` is not persistent (impermanence): NixOS must be
/// told to load it from there (boot.postBootCommands).
const PERSISTENT_REGISTRATION: &str = "/nix/nix-path-registration";
/// Where the store is inside the image.
pub const IMAGE_STORE: &str = "/nix/store";

/// The inputs, read and checked.
pub struct Inputs {
    pub layout: Layout,
    /// The label and UUID: the spec's, else those the NixOS `fileSystems`
    /// name the image device by.
    pub label: Option<String>,
    pub uuid: Option<Uuid>,
    pub manifest: Option<Manifest>,
    /// A directory rootfs, canonical.
    pub rootfs: Option<PathBuf>,
    /// A tar archive rootfs, canonical (unpacked by [`prepare`]).
    pub tar_archive: Option<PathBuf>,
    pub closure: Option<Closure>,
    pub warnings: Vec<String>,
}

impl Inputs {
    /// The trees staged into the image: the output must not be inside one.
    pub fn sources(&self) -> Vec<&Path> {
        let mut sources: Vec<&Path> = self.rootfs.iter().map(|r| r.as_path()).collect();
        sources.extend(self.tar_archive.as_deref());
        sources.extend(
            self.closure
                .iter()
                .flat_map(|c| c.paths.iter().map(|p| p.as_path())),
        );
        sources
    }
}

/// Reads and checks the spec's inputs.
pub fn resolve(spec: &Spec, opts: &Options) -> Result<Inputs> {
    let mut warnings = Vec::new();
    let (layout, label, uuid) = layout(spec, &mut warnings)?;
    let manifest = match &spec.owners {
        Some(p) => Some(Manifest::load(p)?),
        None => None,
    };
    // A tar archive as the rootfs is unpacked into scratch space by
    // `prepare`, once the scratch directory exists.
    let mut tar_archive = None;
    let rootfs = match &spec.rootfs {
        Some(r) => {
            let m = std::fs::metadata(r).map_err(|e| {
                anyhow!(
                    "rootfs {}: {e} (give an existing directory with --rootfs)",
                    r.display()
                )
            })?;
            if m.is_file() && tarball::is_tar_name(r) {
                if opts.map == MapMode::Subrange {
                    bail!("rootfs {}: a tar archive is unpacked as you, and --map subrange does not map you: use --map auto or single (the archive's owners reach the image anyway)", r.display());
                }
                tar_archive = Some(std::fs::canonicalize(r)?);
                None
            } else if !m.is_dir() {
                bail!("rootfs {} is not a directory (give the populated root directory, or a .tar, .tar.zst or .tar.gz archive, with --rootfs)", r.display());
            } else {
                Some(std::fs::canonicalize(r)?)
            }
        }
        None => None,
    };
    let closure = match &spec.closure {
        Some(c) => Some(Closure::load(c, &spec.store_dir)?),
        None => None,
    };
    if closure.as_ref().is_some_and(|c| c.is_empty()) {
        warnings.push("the closure is empty: the image has no Nix store paths".into());
    }
    if rootfs.is_none() && tar_archive.is_none() && closure.is_none() {
        bail!("nothing to put in the image: give --rootfs DIR and/or --closure PATH (or try --example)");
    }
    if spec.filesystem == Filesystem::Btrfs {
        check_btrfs_limits(label.as_deref(), &spec.size)?;
    }
    Ok(Inputs {
        layout,
        label,
        uuid,
        manifest,
        rootfs,
        tar_archive,
        closure,
        warnings,
    })
}

/// The longest label mkfs.btrfs takes, in bytes (BTRFS_LABEL_SIZE less
/// its NUL).
const BTRFS_MAX_LABEL: usize = 255;
/// The smallest filesystem mkfs.btrfs makes (6.14 to 7.3: "minimum size
/// for a btrfs filesystem is 114294784"; single data, DUP metadata).
const BTRFS_MIN_SIZE: u64 = 114_294_784;

/// What mkfs.btrfs would reject only after the staging: checked first.
fn check_btrfs_limits(label: Option<&str>, size: &Size) -> Result<()> {
    if let Some(l) = label.filter(|l| l.len() > BTRFS_MAX_LABEL) {
        bail!(
            "label is {} bytes long; a btrfs label has at most {BTRFS_MAX_LABEL} bytes: give a shorter --label",
            l.len()
        );
    }
    if let Size::Fixed(b) = size {
        if b.bytes() < BTRFS_MIN_SIZE {
            bail!(
                "size {b} is smaller than the smallest btrfs filesystem mkfs.btrfs makes, {} ({BTRFS_MIN_SIZE} bytes): give at least --size 109M, or --size auto",
                ByteSize(BTRFS_MIN_SIZE)
            );
        }
    }
    Ok(())
}

/// The subvolume layout, with the label and UUID (a NixOS `fileSystems`
/// may name the image device by either).
fn layout(
    spec: &Spec,
    warnings: &mut Vec<String>,
) -> Result<(Layout, Option<String>, Option<Uuid>)> {
    let mut label = spec.label.clone();
    let mut uuid = spec.uuid.clone();
    if spec.filesystem != Filesystem::Btrfs {
        // No subvolumes: the whole tree is the one root, staged in
        // crate::fs::STAGED_ROOT.
        let subvolumes = !spec.subvolumes.is_empty() || spec.file_systems.is_some();
        let o = rootbox_images::fs::Options {
            subvolumes,
            ..rootbox_images::fs::Options::default()
        };
        if let Some(fs) = spec.filesystem.other() {
            rootbox_images::fs::check(fs, &o)?;
        }
        let root = SubvolumeSpec {
            name: crate::fs::STAGED_ROOT.into(),
            mountpoint: "/".into(),
            kind: Default::default(),
            inode_flags: Vec::new(),
        };
        return Ok((Layout::new(&[root])?, label, uuid));
    }
    let Some(fs_file) = &spec.file_systems else {
        if spec.subvolumes.is_empty() {
            bail!("no subvolumes given: add --subvol NAME:MOUNTPOINT (e.g. --subvol @:/:default --subvol @nix:/nix) or --file-systems FILE");
        }
        return Ok((Layout::new(&spec.subvolumes)?, label, uuid));
    };
    let text = std::fs::read_to_string(fs_file)
        .with_context(|| format!("reading NixOS fileSystems {}", fs_file.display()))?;
    let dev = ImageDevice {
        label: label.clone(),
        uuid: uuid.as_ref().map(|u| u.to_string()),
        device: None,
    };
    let nl = from_nixos_file_systems(&text, &dev).with_context(|| fs_file.display().to_string())?;
    if label.is_none() {
        label = nl.label.clone();
    }
    if uuid.is_none() {
        if let Some(u) = &nl.uuid {
            let parsed = u.parse::<Uuid>();
            uuid = Some(parsed.with_context(|| format!("{}: uuid {u}", fs_file.display()))?);
        }
    }
    for (mp, o) in &nl.mount_options {
        warnings.push(format!(
            "fileSystems {mp}: mount options {} apply at boot, not at build",
            o.join(",")
        ));
    }
    for i in &nl.ignored {
        tracing::debug!("fileSystems: ignored {i}");
    }
    Ok((Layout::new(&nl.subvolumes)?, label, uuid))
}

/// What the staging step gets, on disk and in the job: scratch space, the
/// unpacked tar rootfs, one root per subvolume, the registration.
pub struct Staging {
    /// Copies (and an unpacked tar rootfs) go here; removed when dropped.
    pub scratch: Held,
    /// The parent's private directory: the job, its result, the
    /// registration rewritten for the image, the staging mount point.
    pub plan_dir: Held,
    /// The (empty) directory the staging tmpfs is mounted on.
    pub stage_dir: PathBuf,
    /// What the tar rootfs's headers say, applied to the image after mkfs.
    pub tar_owners: Option<TarOwners>,
    pub roots: Vec<Root>,
    pub store_paths: Vec<PathBuf>,
    /// The registration's image path.
    pub registration: Option<String>,
    /// The registration file for the image, and its staging path.
    pub staged_registration: Option<(PathBuf, PathBuf)>,
    /// Top-level rootfs paths outside every subvolume.
    pub left_out: Vec<String>,
    pub warnings: Vec<String>,
}

/// Makes scratch space beside `out` (or in `--scratch`), unpacks a tar
/// rootfs there, and decides where each subvolume's content, the store and
/// the registration come from.
pub fn prepare(spec: &Spec, inputs: &Inputs, opts: &Options, out: &Target) -> Result<Staging> {
    let layout = &inputs.layout;
    let mut warnings = Vec::new();
    let scratch = scratch_dir(opts.scratch.as_deref(), out)?;
    // A tar rootfs: unpacked as the caller into scratch space (its owners
    // and modes kept aside, applied to the image after mkfs).
    let mut tar_owners = None;
    let rootfs = match (&inputs.rootfs, &inputs.tar_archive) {
        (None, Some(archive)) => {
            let dir = scratch.path().join("rootfs");
            tracing::debug!("unpacking {} into {}", archive.display(), dir.display());
            let o = tarball::unpack(archive, &dir)?;
            warnings.extend(o.warnings.iter().cloned());
            tar_owners = Some(o);
            Some(dir)
        }
        (r, _) => r.clone(),
    };
    let closure = inputs.closure.as_ref();
    let store_at = closure.map(|_| {
        layout.locate(IMAGE_STORE).ok_or_else(|| {
            anyhow!("no subvolume holds {IMAGE_STORE}: add one at / or /nix (e.g. --subvol @nix:/nix), or leave out the closure")
        })
    });
    let store_at = store_at
        .transpose()?
        .map(|(s, rel)| (s.name.clone(), PathBuf::from(rel)));
    let store_paths = closure.map(|c| c.paths.clone()).unwrap_or_default();
    let roots = layout
        .subvolumes()
        .iter()
        .map(|sv| Root {
            src: rootfs
                .as_ref()
                .map(|r| r.join(sv.mountpoint.trim_start_matches('/'))),
            dst: PathBuf::from(&sv.name),
            masked: sv.masked.clone(),
            store: store_at
                .as_ref()
                .filter(|(n, _)| n == &sv.name)
                .map(|(_, rel)| rel.clone()),
        })
        .collect();
    let plan_dir = temp_dir("rootbox-build-")?;
    let mut staged_registration = None;
    let registration = match closure.and_then(|c| c.registration.as_ref().map(|r| (c, r))) {
        Some((c, reg)) => {
            let target = spec.registration.clone().unwrap_or_else(|| {
                if layout.has_root() {
                    NIXOS_REGISTRATION
                } else {
                    PERSISTENT_REGISTRATION
                }
                .to_string()
            });
            let (sv, rel) = layout.locate(&target).ok_or_else(|| {
                anyhow!("no subvolume holds the registration path {target}: set --registration to a path inside a subvolume")
            })?;
            let text = std::fs::read_to_string(reg)
                .with_context(|| format!("reading {}", reg.display()))?;
            let text = rehome_registration(&text, &c.store_dir);
            let staged = plan_dir.path().join("registration");
            std::fs::write(&staged, text)?;
            staged_registration = Some((staged, PathBuf::from(&sv.name).join(rel)));
            Some(target)
        }
        None => None,
    };
    let left_out = match &rootfs {
        Some(r) => layout
            .uncovered(list_fs_dir(r))
            .with_context(|| format!("listing {}", r.display()))?,
        None => Vec::new(),
    };
    // Said in the summary ("left out") and the report's `left_out`.
    for l in &left_out {
        tracing::debug!("{l} is outside every subvolume: left out of the image");
    }
    let stage_dir = plan_dir.path().join("stage");
    std::fs::create_dir(&stage_dir)?;
    Ok(Staging {
        scratch,
        plan_dir,
        stage_dir,
        tar_owners,
        roots,
        store_paths,
        registration,
        staged_registration,
        left_out,
        warnings,
    })
}

/// The seed of a reproducible image: the one asked for, or else what
/// defines the image's shape, never a source path (two copies of a tree in
/// different places must give the same image).
pub fn seed(spec: &Spec, layout: &Layout, opts: &Options) -> Option<String> {
    let r = opts.reproducible.as_ref()?;
    Some(r.seed.clone().unwrap_or_else(|| {
        let subvols: Vec<String> = layout
            .subvolumes()
            .iter()
            .map(|s| format!("{}:{}:{}", s.name, s.mountpoint, s.kind))
            .collect();
        format!(
            "rootbox/1 label={:?} uuid={:?} subvolumes={} compress={:?}",
            spec.label,
            spec.uuid.as_ref().map(|u| u.to_string()),
            subvols.join(","),
            spec.compress.map(|c| c.mkfs_arg())
        )
    }))
}

/// Rewrites a registration whose paths live in `store_dir` on this
/// machine so that it names them where they are in the image.
fn rehome_registration(text: &str, store_dir: &Path) -> String {
    let from = format!("{}/", store_dir.display());
    let to = format!("{IMAGE_STORE}/");
    if from == to {
        return text.to_string();
    }
    text.lines()
        .map(|l| match l.strip_prefix(&from) {
            Some(rest) => format!("{to}{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_rehomed_to_the_image_store() {
        let text = "/tmp/x/nix/store/abc-a\nsha256:00\n12\n\n1\n/tmp/x/nix/store/abc-a\n";
        let out = rehome_registration(text, Path::new("/tmp/x/nix/store"));
        assert_eq!(
            out,
            "/nix/store/abc-a\nsha256:00\n12\n\n1\n/nix/store/abc-a\n"
        );
        assert_eq!(
            rehome_registration("/nix/store/a\n", Path::new("/nix/store")),
            "/nix/store/a\n"
        );
    }
}
