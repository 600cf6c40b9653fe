//! `rootbox build`'s command line: the flags ([`BuildArgs`]), merged over
//! a JSON spec, become a [`BuildRequest`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Compress, ReflinkMode, Spec, SubvolumeSpec, Uuid};
use rootbox_sandbox::MapMode;

use super::example::{self, Example};
use super::inputs::IMAGE_STORE;
use super::request::{BuildRequest, Options, StoreStaging};
use crate::reproducible::{source_date_epoch, Reproducible};

/// Build a btrfs image whose files are owned by root, without being root.
///
/// The rootfs and the closure are staged in a user namespace in which you
/// are root (bind mounts, no copy where owners map) and put through
/// `mkfs.btrfs --rootdir --subvol`. Each subvolume is a top-level directory
/// of the filesystem (`subvol=@nix`) and receives the part of the rootfs
/// under its mount point. The image is read back and checked before it
/// appears at the output path.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  rootbox build --example -o demo.img
  rootbox build --rootfs ./root --closure ./closure-info \\
      --subvol @:/:default --subvol @nix:/nix --subvol @home:/home -o nixos.img
  rootbox build --rootfs ./root --closure ./closure-info \\
      --subvol @nix:/nix --subvol @persist:/persist -o impermanence.img
  rootbox build --spec image.json --json -o out.img
  rootbox build --rootfs ./root --file-systems fs.json --label nixos -o sd.img
  rootbox build --filesystem vfat --rootfs ./esp --label ESP -o esp.img

Subvolume types: rw (default), ro, default (mounted when no subvol= is
given), default-ro. Inode flags (btrfs-progs 6.15), inherited by the
subvolume's files: nodatacow (e.g. for a swap file or VM images; implies
nodatasum), nodatasum (the subvolume's root directory only: mkfs, like the
kernel, passes only nodatacow on to files), joined by commas: --subvol @swap:/swap:nodatacow or
--subvol @vm:/var/lib/vm:rw:nodatacow,nodatasum. Without a subvolume at /, rootfs content outside every
subvolume is left out (and listed). The Nix store goes to /nix/store of
the subvolume that holds it; the registration to /nix-path-registration,
or /nix/nix-path-registration when / is not a subvolume.")]
pub struct BuildArgs {
    /// A JSON spec (see README); flags given as well override its fields.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// The populated root filesystem: a directory, or a tar archive
    /// (.tar, .tar.zst, .tar.gz) whose headers give the owners and modes.
    #[arg(long, value_name = "DIR|FILE.tar")]
    rootfs: Option<PathBuf>,
    /// A nixpkgs closureInfo directory (store-paths, registration), or a
    /// file listing store paths.
    #[arg(long, value_name = "PATH")]
    closure: Option<PathBuf>,
    /// A file listing store paths (same as --closure FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "closure")]
    store_paths: Option<PathBuf>,
    /// Where the closure's store paths are on this machine.
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// A subvolume: NAME:MOUNTPOINT[:rw|ro|default|default-ro][:FLAGS],
    /// FLAGS being inode flags (nodatacow, nodatasum) joined by commas.
    /// Repeat.
    #[arg(long = "subvol", value_name = "NAME:MOUNTPOINT[:TYPE][:FLAGS]")]
    subvols: Vec<String>,
    /// Take the subvolumes from a NixOS fileSystems JSON
    /// (builtins.toJSON config.fileSystems).
    #[arg(long, value_name = "FILE", conflicts_with = "subvols")]
    file_systems: Option<PathBuf>,
    /// The filesystem: btrfs (default), ext4, erofs, squashfs or vfat.
    ///
    /// btrfs: subvolumes, read-write. ext4: read-write, the whole tree.
    /// erofs, squashfs: read-only, compressed. vfat: for EFI system and
    /// firmware partitions, made from a --rootfs directory; FAT has no
    /// owners, so it needs no user namespace, and --closure and --owners
    /// are refused.
    #[arg(long, value_name = "FS")]
    filesystem: Option<String>,
    /// Filesystem label.
    #[arg(long, short = 'L')]
    label: Option<String>,
    /// Filesystem UUID.
    #[arg(long, short = 'U')]
    uuid: Option<String>,
    /// auto (smallest that fits, plus --headroom) or a size like 2G.
    #[arg(long)]
    size: Option<String>,
    /// Free space to add to an auto size, like 512M.
    #[arg(long)]
    headroom: Option<String>,
    /// Compression: zstd[:LEVEL], zlib[:LEVEL], lzo, or no.
    #[arg(long)]
    compress: Option<String>,
    /// Clone the file data instead of copying it (mkfs.btrfs --reflink,
    /// btrfs-progs 6.16.1): auto when mkfs has it and the sources, the
    /// scratch space and the output share a btrfs or XFS filesystem (and
    /// no compression is asked for); never; always (fail if it cannot).
    #[arg(long, value_name = "auto|never|always")]
    reflink: Option<String>,
    /// Image path of the store registration.
    #[arg(long, value_name = "PATH")]
    registration: Option<String>,
    /// An ownership manifest: lines of `PATH UID GID [MODE]` (globs, and
    /// `/dir/**` for a whole subtree), applied to the image after mkfs, e.g.
    /// `/home/alice/** 1000 100`. Every line must match a path of the image.
    #[arg(long, value_name = "FILE")]
    owners: Option<PathBuf>,
    /// How ids are mapped (see `rootbox run --help`). With a subordinate
    /// range, files owned by ids inside it keep their owners in the image.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    map: MapMode,
    /// How content whose owner does not map into the namespace (e.g. the
    /// root-owned store inside a Nix build) is staged: auto copies just
    /// that, bind refuses, copy copies every store path.
    #[arg(long, value_enum, default_value = "auto")]
    store_staging: StoreStaging,
    /// Where copies go (default: beside the output, so they can be reflinks).
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// The image to write.
    #[arg(short, long, value_name = "IMAGE")]
    output: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Build without a user namespace, for machines that allow none (qemu-user
    /// emulation, containers, Ubuntu's AppArmor restriction): the sources are
    /// copied (reflinked where possible) as you, and your uid and gid are
    /// rewritten to root in the image after mkfs. Taken automatically when no
    /// namespace can be made and --map is auto.
    #[arg(long, conflicts_with = "map")]
    no_userns: bool,
    /// A reproducible image: the same inputs give the same bytes. Every time
    /// is clamped to SOURCE_DATE_EPOCH (default: the newest mtime of the
    /// sources), the UUIDs mkfs picks at random are derived from --seed, and
    /// the tree is staged as a sorted copy in memory (mkfs numbers inodes
    /// in listing order). Also on when SOURCE_DATE_EPOCH is set.
    #[arg(long)]
    reproducible: bool,
    /// The seed of a reproducible image's UUIDs (default: from the label
    /// and the layout, not from any path).
    #[arg(long, value_name = "TEXT")]
    seed: Option<String>,
    /// UNSAFE: skip reading the image back and checking owners and modes.
    #[arg(long)]
    no_verify: bool,
    /// Build the built-in example (a demo rootfs and a fake closure).
    #[arg(long)]
    example: bool,
    /// Print the effective spec as JSON and exit.
    #[arg(long)]
    pub print_spec: bool,
}

impl BuildArgs {
    /// The effective spec: the built-in example's, or the one from
    /// `--spec` with the flags applied on top. The example's files live as
    /// long as the returned [`Example`].
    pub fn spec(&self) -> Result<(Spec, Option<Example>)> {
        if self.example {
            let ex = example::make().context("making the example rootfs and closure")?;
            Ok((ex.spec.clone(), Some(ex)))
        } else {
            Ok((effective_spec(self)?, None))
        }
    }

    /// The request to build `spec` as the flags say.
    pub fn request(&self, spec: Spec) -> Result<BuildRequest> {
        let output = match (&self.output, self.example) {
            (Some(o), _) => o.clone(),
            (None, true) => PathBuf::from("rootbox-example.img"),
            (None, false) => bail!("no output given: add -o IMAGE"),
        };
        Ok(BuildRequest {
            spec,
            output,
            options: Options {
                map: self.map,
                staging: self.store_staging,
                scratch: self.scratch.clone(),
                force: self.force || self.example,
                verify: !self.no_verify,
                no_userns: self.no_userns,
                reproducible: reproducible_options(self)?,
            },
        })
    }
}

/// The spec from --spec, with the flags applied on top.
fn effective_spec(a: &BuildArgs) -> Result<Spec> {
    let (mut spec, origin) = match &a.spec {
        Some(p) => (Spec::from_json_file(p)?, p.display().to_string()),
        None => (Spec::default(), "the command line".to_string()),
    };
    if spec.store_dir.as_os_str().is_empty() {
        spec.store_dir = PathBuf::from(IMAGE_STORE);
    }
    if let Some(v) = &a.rootfs {
        spec.rootfs = Some(v.clone());
    }
    if let Some(v) = a.closure.as_ref().or(a.store_paths.as_ref()) {
        spec.closure = Some(v.clone());
    }
    if let Some(v) = &a.store_dir {
        spec.store_dir = v.clone();
    }
    if !a.subvols.is_empty() {
        spec.subvolumes = a
            .subvols
            .iter()
            .map(|s| SubvolumeSpec::parse_cli(s).context("--subvol"))
            .collect::<Result<_>>()?;
        spec.file_systems = None;
    }
    if let Some(v) = &a.file_systems {
        spec.file_systems = Some(v.clone());
        spec.subvolumes.clear();
    }
    if let Some(v) = &a.filesystem {
        spec.filesystem = v
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--filesystem")?;
    }
    if let Some(v) = &a.label {
        spec.label = Some(v.clone());
    }
    if let Some(v) = &a.uuid {
        spec.uuid = Some(v.parse::<Uuid>().context("--uuid")?);
    }
    if let Some(v) = &a.size {
        spec.size = v.parse::<Size>().context("--size")?;
    }
    if let Some(v) = &a.headroom {
        spec.headroom = v.parse::<ByteSize>().context("--headroom")?;
    }
    if let Some(v) = &a.compress {
        // Its parser's error is a message (String), not an error type.
        let compress = v.parse::<Compress>().map_err(anyhow::Error::msg);
        spec.compress = Some(compress.context("--compress")?);
    }
    if let Some(v) = &a.reflink {
        let mode = v.parse::<ReflinkMode>().map_err(anyhow::Error::msg);
        spec.reflink = mode.context("--reflink")?;
    }
    if let Some(v) = &a.registration {
        spec.registration = Some(v.clone());
    }
    if let Some(v) = &a.owners {
        spec.owners = Some(v.clone());
    }
    spec.validate(&origin)?;
    Ok(spec)
}

fn reproducible_options(a: &BuildArgs) -> Result<Option<Reproducible>> {
    let epoch = source_date_epoch()?;
    Ok((a.reproducible || epoch.is_some()).then(|| Reproducible {
        epoch,
        seed: a.seed.clone(),
        explicit: a.reproducible,
    }))
}
