//! `rootbox build`: a btrfs image with subvolumes from a rootfs and a Nix
//! closure, owned by root, verified.
//!
//! The phases, each timed in the report:
//! 1. *plan* (parent, no namespace): spec → layout → closure → a walk of
//!    the sources deciding, entry by entry, bind or copy ([`plan`]);
//! 2. *stage + mkfs* (in the sandbox: `rootbox __stage`, [`stage`]);
//! 3. *verify* (parent): the image read back with rootbox's btrfs reader
//!    ([`verify`]);
//! 4. *publish*: the image, written to an unnamed temporary file beside
//!    the output, is linked into place only now. A failed or killed build
//!    leaves nothing at the output path.

mod example;
mod fixup;
mod output;
pub mod plan;
pub mod stage;
mod tarball;
mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rootbox_images::closure::Closure;
use rootbox_images::layout::{list_fs_dir, Layout};
use rootbox_images::mkfs::{estimate_min_size, BtrfsProgsVersion};
use rootbox_images::nixos::{from_nixos_file_systems, ImageDevice};
use rootbox_images::owners::Manifest;
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Compress, Spec, SubvolumeSpec, Uuid};
use std::collections::HashSet;

use rootbox_sandbox::{Error as SandboxError, MapMode, Sandbox};
use serde::Serialize;

use plan::{Counts, Root, StoreStaging};
use stage::{MkfsJob, StageJob, StageResult};

/// Where NixOS's stage 2 looks for the store registration to load at first
/// boot (`nix-store --load-db`).
const NIXOS_REGISTRATION: &str = "/nix-path-registration";
/// Where it goes when `/` is not persistent (impermanence): NixOS must be
/// told to load it from there (boot.postBootCommands).
const PERSISTENT_REGISTRATION: &str = "/nix/nix-path-registration";
/// Where the store is inside the image.
const IMAGE_STORE: &str = "/nix/store";

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

Subvolume types: rw (default), ro, default (mounted when no subvol= is
given), default-ro. Without a subvolume at /, rootfs content outside every
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
    /// A subvolume: NAME:MOUNTPOINT[:rw|ro|default|default-ro]. Repeat.
    #[arg(long = "subvol", value_name = "NAME:MOUNTPOINT[:TYPE]")]
    subvols: Vec<String>,
    /// Take the subvolumes from a NixOS fileSystems JSON
    /// (builtins.toJSON config.fileSystems).
    #[arg(long, value_name = "FILE", conflicts_with = "subvols")]
    file_systems: Option<PathBuf>,
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
    json: bool,
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
    print_spec: bool,
}

/// The JSON result of a build.
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub size_bytes: u64,
    pub uuid: String,
    pub label: String,
    pub mkfs_version: String,
    pub map: String,
    pub subvolumes: Vec<verify::SubvolReport>,
    pub entries: u64,
    pub content_bytes: u64,
    pub copied_bytes: u64,
    pub bound_bytes: u64,
    pub binds: u64,
    /// Inodes whose owner (unmapped in the namespace) or device number was
    /// fixed in the image after mkfs.
    pub rewritten_inodes: u64,
    pub store_paths: usize,
    pub registration: Option<String>,
    pub owners: Owners,
    pub timings: Timings,
    pub left_out: Vec<String>,
    pub warnings: Vec<String>,
    pub verified: bool,
    /// Set for a reproducible image.
    pub reproducible: Option<ReproducibleReport>,
}

/// What a reproducible image was made with.
#[derive(Debug, Serialize)]
pub struct ReproducibleReport {
    pub epoch: i64,
    pub seed: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Owners {
    pub uids: std::collections::BTreeMap<u32, u64>,
    pub gids: std::collections::BTreeMap<u32, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub plan: f64,
    pub stage: f64,
    pub copy: f64,
    pub mkfs: f64,
    pub verify: f64,
    pub rewrite: f64,
    /// Removing scratch copies.
    pub cleanup: f64,
    pub total: f64,
}

/// The spec from --spec, with the flags applied on top.
fn effective_spec(a: &BuildArgs) -> Result<(Spec, String)> {
    let (mut spec, origin) = match &a.spec {
        Some(p) => (Spec::from_json_file(p)?, p.display().to_string()),
        None => (Spec::default(), "the command line".to_string()),
    };
    if spec.store_dir.as_os_str().is_empty() {
        spec.store_dir = PathBuf::from(IMAGE_STORE);
    }
    let flag = |name: &str, e: String| anyhow!("--{name}: {e}");
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
            .map(|s| SubvolumeSpec::parse_cli(s).map_err(|e| flag("subvol", e.to_string())))
            .collect::<Result<_>>()?;
        spec.file_systems = None;
    }
    if let Some(v) = &a.file_systems {
        spec.file_systems = Some(v.clone());
        spec.subvolumes.clear();
    }
    if let Some(v) = &a.label {
        spec.label = Some(v.clone());
    }
    if let Some(v) = &a.uuid {
        spec.uuid = Some(v.parse::<Uuid>().map_err(|e| flag("uuid", e.to_string()))?);
    }
    if let Some(v) = &a.size {
        spec.size = v.parse::<Size>().map_err(|e| flag("size", e.to_string()))?;
    }
    if let Some(v) = &a.headroom {
        spec.headroom = v
            .parse::<ByteSize>()
            .map_err(|e| flag("headroom", e.to_string()))?;
    }
    if let Some(v) = &a.compress {
        spec.compress = Some(
            v.parse::<Compress>()
                .map_err(|e| flag("compress", e.to_string()))?,
        );
    }
    if let Some(v) = &a.registration {
        spec.registration = Some(v.clone());
    }
    if let Some(v) = &a.owners {
        spec.owners = Some(v.clone());
    }
    spec.validate(&origin)?;
    Ok((spec, origin))
}

pub fn main(a: &BuildArgs) -> Result<ExitCode> {
    let _example_dir;
    let (spec, _) = if a.example {
        let ex = example::make().context("making the example rootfs and closure")?;
        let spec = ex.spec.clone();
        _example_dir = ex;
        (spec, "the built-in example".to_string())
    } else {
        effective_spec(a)?
    };
    if a.print_spec {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    let output = match (&a.output, a.example) {
        (Some(o), _) => o.clone(),
        (None, true) => PathBuf::from("rootbox-example.img"),
        (None, false) => bail!("no output given: add -o IMAGE"),
    };
    let opts = Options {
        map: a.map,
        staging: a.store_staging,
        scratch: a.scratch.clone(),
        force: a.force || a.example,
        verify: !a.no_verify,
        no_userns: a.no_userns,
        reproducible: reproducible_options(a)?,
    };
    let report = match build(&spec, &output, &opts) {
        Ok(r) => r,
        // Reported as a shell would (130 for SIGINT, 143 for SIGTERM).
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(&Interrupted(sig)) => {
                eprintln!("rootbox: {e}; nothing was written to {}", output.display());
                return Ok(ExitCode::from((128 + sig) as u8));
            }
            None => return Err(e),
        },
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// A build stopped by a signal (SIGINT, SIGTERM, SIGHUP).
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(s) => write!(f, "interrupted by {s}"),
            Err(_) => write!(f, "interrupted by signal {}", self.0),
        }
    }
}

impl std::error::Error for Interrupted {}

/// How to build, beyond the spec.
pub struct Options {
    pub map: MapMode,
    pub staging: StoreStaging,
    pub scratch: Option<PathBuf>,
    pub force: bool,
    pub verify: bool,
    pub no_userns: bool,
    pub reproducible: Option<Reproducible>,
}

/// How a reproducible image is made.
pub struct Reproducible {
    /// Times above it are clamped to it; None: the newest source mtime.
    pub epoch: Option<i64>,
    /// Explicit seed, else one derived from the spec.
    pub seed: Option<String>,
}

fn reproducible_options(a: &BuildArgs) -> Result<Option<Reproducible>> {
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(v.trim().parse::<i64>().map_err(|_| {
            anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?),
        Err(_) => None,
    };
    Ok((a.reproducible || epoch.is_some()).then(|| Reproducible {
        epoch,
        seed: a.seed.clone(),
    }))
}

/// The seed of a reproducible image when none is given: what defines the
/// image's shape, never a source path (two copies of a tree in different
/// places must give the same image).
fn default_seed(spec: &Spec, layout: &Layout) -> String {
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
}

fn uuid_text(b: [u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn print_summary(r: &Report) {
    println!("image      {} ({} bytes)", r.image.display(), r.size_bytes);
    println!("uuid       {}   label {:?}", r.uuid, r.label);
    for s in &r.subvolumes {
        println!(
            "subvolume  {:<12} at {:<12} {:>7} entries {:>12} bytes{}",
            s.name,
            s.mountpoint,
            s.entries,
            s.bytes,
            if s.default { "  (default)" } else { "" }
        );
    }
    println!(
        "content    {} entries, {} bytes: {} bound ({} bind mounts), {} copied",
        r.entries, r.content_bytes, r.bound_bytes, r.binds, r.copied_bytes
    );
    let owners = |m: &std::collections::BTreeMap<u32, u64>| {
        m.iter()
            .map(|(id, n)| format!("{id}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "owners     uids {}   gids {}",
        owners(&r.owners.uids),
        owners(&r.owners.gids)
    );
    if let Some(reg) = &r.registration {
        println!("registration {reg} ({} store paths)", r.store_paths);
    }
    for l in &r.left_out {
        println!("left out   {l} (no subvolume covers it)");
    }
    let t = &r.timings;
    println!(
        "time       plan {:.2}s, stage {:.2}s, copy {:.2}s, mkfs {:.2}s, verify {:.2}s, total {:.2}s",
        t.plan, t.stage, t.copy, t.mkfs, t.verify, t.total
    );
    println!(
        "verified   {}",
        if r.verified {
            "every owner is one the staged tree had; sshd/tmpfiles paths are safe"
        } else {
            "SKIPPED (--no-verify)"
        }
    );
}

/// Runs one build. Nothing is left at `output` unless it succeeds.
pub fn build(spec: &Spec, output: &Path, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();

    // --- the layout --------------------------------------------------------
    let mut label = spec.label.clone();
    let mut uuid = spec.uuid.clone();
    let mut warnings = Vec::new();
    let layout = if let Some(fs_file) = &spec.file_systems {
        let text = std::fs::read_to_string(fs_file)
            .with_context(|| format!("reading NixOS fileSystems {}", fs_file.display()))?;
        let dev = ImageDevice {
            label: label.clone(),
            uuid: uuid.as_ref().map(|u| u.to_string()),
            device: None,
        };
        let nl = from_nixos_file_systems(&text, &dev)
            .map_err(|e| anyhow!("{}: {e}", fs_file.display()))?;
        if label.is_none() {
            label = nl.label.clone();
        }
        if uuid.is_none() {
            if let Some(u) = &nl.uuid {
                uuid = Some(
                    u.parse()
                        .map_err(|e| anyhow!("{}: uuid {u}: {e}", fs_file.display()))?,
                );
            }
        }
        for (mp, o) in &nl.mount_options {
            warnings.push(format!(
                "fileSystems {mp}: mount options {} apply at boot, not at build",
                o.join(",")
            ));
        }
        for i in &nl.ignored {
            tracing::info!("fileSystems: ignored {i}");
        }
        Layout::new(&nl.subvolumes)?
    } else if spec.subvolumes.is_empty() {
        bail!("no subvolumes given: add --subvol NAME:MOUNTPOINT (e.g. --subvol @:/:default --subvol @nix:/nix) or --file-systems FILE");
    } else {
        Layout::new(&spec.subvolumes)?
    };

    let manifest = match &spec.owners {
        Some(p) => Some(Manifest::load(p)?),
        None => None,
    };

    // --- the sources ---------------------------------------------------------
    // A tar archive as the rootfs (issue 8) is unpacked into scratch space
    // below, once the scratch directory exists; `rootfs` is then set to it.
    let mut tar_archive: Option<PathBuf> = None;
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

    // --- the output ------------------------------------------------------------
    let mut sources: Vec<&Path> = rootfs.iter().map(|r| r.as_path()).collect();
    sources.extend(tar_archive.as_deref());
    sources.extend(
        closure
            .iter()
            .flat_map(|c| c.paths.iter().map(|p| p.as_path())),
    );
    let out = output::Target::check(output, opts.force, &sources)?;

    // --- mkfs.btrfs ------------------------------------------------------------
    let mkfs = rootbox_sandbox::find_program("mkfs.btrfs").ok_or_else(|| {
        anyhow!("mkfs.btrfs not found on PATH: install btrfs-progs 6.12 or newer (Debian bookworm: apt-get install -t bookworm-backports btrfs-progs)")
    })?;
    let version_text = std::process::Command::new(&mkfs)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .with_context(|| format!("running {} --version", mkfs.display()))?;
    let version = BtrfsProgsVersion::parse(&version_text).ok_or_else(|| {
        anyhow!(
            "cannot read the version of {} from {:?}",
            mkfs.display(),
            version_text.trim()
        )
    })?;

    // --- what to stage ----------------------------------------------------------
    let scratch = output::scratch_dir(opts.scratch.as_deref(), &out)?;
    // A tar rootfs: unpacked as the caller into scratch space (its owners
    // and modes kept aside, applied to the image after mkfs).
    let mut tar_owners = None;
    let rootfs = match (rootfs, &tar_archive) {
        (None, Some(archive)) => {
            let dir = scratch.path().join("rootfs");
            tracing::info!("unpacking {} into {}", archive.display(), dir.display());
            let o = tarball::unpack(archive, &dir)?;
            warnings.extend(o.warnings.iter().cloned());
            tar_owners = Some(o);
            Some(dir)
        }
        (r, _) => r,
    };
    let store_at = closure.as_ref().map(|_| {
        layout.locate(IMAGE_STORE).ok_or_else(|| {
            anyhow!("no subvolume holds {IMAGE_STORE}: add one at / or /nix (e.g. --subvol @nix:/nix), or leave out the closure")
        })
    });
    let store_at = store_at
        .transpose()?
        .map(|(s, rel)| (s.name.clone(), PathBuf::from(rel)));
    let paths = closure
        .as_ref()
        .map(|c| c.paths.clone())
        .unwrap_or_default();
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
    let plan_dir = tempfile::Builder::new()
        .prefix("rootbox-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut staged_registration = None;
    let registration = match closure
        .as_ref()
        .and_then(|c| c.registration.as_ref().map(|r| (c, r)))
    {
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
            .map_err(|e| anyhow!("listing {}: {e}", r.display()))?,
        None => Vec::new(),
    };
    for l in &left_out {
        tracing::warn!("{l} is outside every subvolume: left out of the image");
    }
    let stage_dir = plan_dir.path().join("stage");
    std::fs::create_dir(&stage_dir)?;
    let seed = opts.reproducible.as_ref().map(|r| {
        r.seed
            .clone()
            .unwrap_or_else(|| default_seed(spec, &layout))
    });
    let (fs_uuid, device_uuid) = match &seed {
        Some(seed) => {
            let derive = |what| {
                uuid_text(rootbox_btrfs::derived_uuid(seed.as_bytes(), what, &[]))
                    .parse::<Uuid>()
                    .map_err(|e| anyhow!("deriving a UUID: {e}"))
            };
            (
                Some(uuid.clone().map_or_else(|| derive("fsid"), Ok)?),
                Some(derive("device")?),
            )
        }
        None => (uuid.clone(), None),
    };
    let mkfs_job = MkfsJob {
        program: mkfs.clone(),
        label: label.clone(),
        uuid: fs_uuid,
        device_uuid,
        compress: spec.compress,
        subvol_args: layout.mkfs_subvol_args(),
        size: spec.size,
        headroom: spec.headroom,
        output: out.mkfs_path(),
    };
    // The features the run will use do not depend on the content's size.
    mkfs_job
        .plan(&stage_dir, &Counts::default())
        .check_version(&version)?;

    let plan_secs = t0.elapsed().as_secs_f64();

    // --- plan, stage and mkfs, in the sandbox -------------------------------------
    let mut job = StageJob {
        stage_dir,
        roots,
        store_paths: paths.clone(),
        registration: staged_registration,
        staging: opts.staging,
        mkfs: mkfs_job,
        result: plan_dir.path().join("result.json"),
        scratch: scratch.path().to_path_buf(),
        direct: false,
        reproducible: opts.reproducible.is_some(),
    };
    let status = if opts.no_userns {
        run_direct(&mut job)?
    } else {
        let job_path = plan_dir.path().join("job.json");

        std::fs::write(&job_path, serde_json::to_vec(&job)?)?;
        if opts.map == MapMode::Subrange {
            // You are not mapped in this namespace: root there is the first
            // id of your range, and meets your files as "others".
            open_to_the_namespace(plan_dir.path(), &job.result, scratch.path(), &out)?;
        }
        tracing::info!("staging and running {} in the sandbox", mkfs.display());
        let sandbox = Sandbox::new()
            .map(opts.map)
            .unshare_pid()
            .command([
                OsString::from("/proc/self/exe"),
                "__stage".into(),
                job_path.clone().into(),
            ])
            .run();
        match sandbox {
            Ok(status) => status,
            // No user namespace here (disabled, limited, refused by a
            // security module): with the default map, build without one.
            Err(e @ (SandboxError::CreateNamespace { .. } | SandboxError::IdMap { .. }))
                if opts.map == MapMode::Auto =>
            {
                let w = format!("{e}\n  building without a user namespace instead (as --no-userns does): everything is copied, and your ids become root's in the image");
                tracing::warn!("{w}");
                warnings.push(w);
                run_direct(&mut job)?
            }
            Err(e) => {
                return Err(anyhow!("{e}")).context(
                    "cannot start the build sandbox (`rootbox doctor` checks this machine; \
                     --no-userns builds without one)",
                )
            }
        }
    };
    // Ctrl-C, kill, a closed terminal: forwarded to the staging step, which
    // died of it. Stop here (the temporary files go as `build` returns).
    if let rootbox_sandbox::ExitStatus::Signaled(sig) = status {
        if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&sig) {
            return Err(Interrupted(sig).into());
        }
    }
    let result: StageResult = std::fs::read(&job.result)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| anyhow!("the staging step ended with {status} without a result"))?;
    let counts = result.counts.clone();
    warnings.extend(result.warnings.iter().cloned());
    if let Some(e) = &result.error {
        bail!("staging failed: {e}");
    }
    if result.mkfs_status != Some(0) {
        return Err(mkfs_failure(&result, &spec.size, &counts, out.dir()));
    }
    if !status.success() {
        bail!("the staging step ended with {status}");
    }
    // mkfs.btrfs silently grows a --byte-count too small for the content.
    if let Size::Fixed(b) = spec.size {
        let made = std::fs::metadata(out.read_path())
            .map(|m| m.len())
            .unwrap_or(0);
        if made != b.bytes() {
            bail!(
                "--size {b} is too small for the content ({} bytes in {} entries): mkfs.btrfs \
                 needed {} (use --size auto, or at least that much)",
                counts.bytes,
                counts.entries,
                ByteSize(made)
            );
        }
    }
    let (mut allowed_uids, mut allowed_gids): (HashSet<u32>, HashSet<u32>) = if job.direct {
        // The caller's ids, which the rewrite below gives to root.
        (HashSet::from([0]), HashSet::from([0]))
    } else {
        (
            result.uids.iter().copied().collect(),
            result.gids.iter().copied().collect(),
        )
    };
    if let Some(m) = &manifest {
        allowed_uids.extend(m.rules.iter().map(|r| r.uid));
        allowed_gids.extend(m.rules.iter().map(|r| r.gid));
    }
    // A tar rootfs: the owners its headers give.
    if let Some(o) = &tar_owners {
        allowed_uids.extend(o.uids());
        allowed_gids.extend(o.gids());
    }

    // --- rewrite: owners that did not map, device numbers ----------------------
    let caller = job.direct.then(|| {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    });
    let needs_rewrite = counts.rewrite_entries > 0
        || !result.devices.is_empty()
        || manifest.is_some()
        || caller.is_some();
    let (mut rewritten, rewrite_secs) = if needs_rewrite {
        let t = Instant::now();
        let n = fixup::fix_image(
            &out.read_path(),
            &layout,
            &result.devices,
            manifest.as_ref(),
            caller,
        )?;
        tracing::info!(
            "rewrite: {} inodes of unmapped owners given to root, {} device numbers set, {} inodes per the ownership manifest",
            n.owners,
            n.devices,
            n.manifest
        );
        (n.owners + n.devices + n.manifest, t.elapsed().as_secs_f64())
    } else {
        (0, 0.0)
    };
    let mut rewrite_secs = rewrite_secs;
    // A tar rootfs: the headers' owners and modes, after the rewrite above
    // (which, without a namespace, gives the caller's ids to root) and
    // yielding to the ownership manifest's rules.
    if let Some(o) = &tar_owners {
        let t = Instant::now();
        let n = tarball::apply(&out.read_path(), &layout, o, manifest.as_ref())?;
        tracing::info!("tar rootfs: {n} inodes given the archive's owners and modes");
        rewritten += n;
        rewrite_secs += t.elapsed().as_secs_f64();
    }

    // --- reproducible: times clamped, random UUIDs derived, leftovers zeroed --
    let reproducible = match (&opts.reproducible, &seed) {
        (Some(r), Some(seed)) => {
            let t = Instant::now();
            let epoch = r.epoch.unwrap_or(result.max_mtime);
            let mut rw = rootbox_btrfs::Rewriter::open(&out.read_path())
                .map_err(|e| anyhow!("opening the image to make it reproducible: {e}"))?;
            rw.make_reproducible(epoch, seed.as_bytes())
                .map_err(|e| anyhow!("making the image reproducible: {e}"))?;
            rw.commit()
                .map_err(|e| anyhow!("writing the reproducible image: {e}"))?;
            rewrite_secs += t.elapsed().as_secs_f64();
            tracing::info!("reproducible: times clamped to {epoch}, UUIDs derived from the seed");
            Some(ReproducibleReport {
                epoch,
                seed: seed.clone(),
            })
        }
        _ => None,
    };

    // --- verify ------------------------------------------------------------------
    let (verified, owners, subvolumes, verify_secs) = if opts.verify {
        let v = verify::verify(&out.read_path(), &layout, &allowed_uids, &allowed_gids)?;
        if !v.problems.is_empty() {
            bail!(
                "verification failed; the image was not written:\n  {}",
                v.problems.join("\n  ")
            );
        }
        tracing::info!("verified {} entries in {:.2}s", v.entries, v.secs);
        (
            true,
            Owners {
                uids: v.uids,
                gids: v.gids,
            },
            v.subvolumes,
            v.secs,
        )
    } else {
        tracing::warn!("--no-verify: the image was not read back; owners and modes are unchecked");
        (false, Owners::default(), Vec::new(), 0.0)
    };
    let info = rootbox_btrfs::Image::open(&out.read_path())
        .map(|i| i.info().clone())
        .ok();

    // --- publish -----------------------------------------------------------------
    let size_bytes = out.publish()?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Report {
        image: output.to_path_buf(),
        size_bytes,
        uuid: info.as_ref().map(|i| i.fsid.clone()).unwrap_or_default(),
        label: info.as_ref().map(|i| i.label.clone()).unwrap_or_default(),
        mkfs_version: version.to_string(),
        map: format!("{:?}", opts.map).to_lowercase(),
        subvolumes,
        entries: counts.entries,
        content_bytes: counts.bytes,
        copied_bytes: result.copied_bytes,
        bound_bytes: counts.bound_bytes,
        binds: counts.binds,
        rewritten_inodes: rewritten,
        store_paths: paths.len(),
        registration,
        owners,
        timings: Timings {
            plan: plan_secs + result.plan_secs,
            stage: result.stage_secs,
            copy: result.copy_secs,
            mkfs: result.mkfs_secs,
            verify: verify_secs,
            rewrite: rewrite_secs,
            cleanup: result.cleanup_secs,
            total: t0.elapsed().as_secs_f64(),
        },
        left_out,
        warnings,
        verified,
        reproducible,
    })
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

fn mkfs_failure(r: &StageResult, size: &Size, counts: &Counts, out_dir: &Path) -> anyhow::Error {
    // Its ERROR lines say what went wrong; the last lines are often only
    // its summary (stdout) or leak warnings.
    let errors: Vec<&str> = r
        .mkfs_output
        .lines()
        .filter(|l| l.starts_with("ERROR:") && !l.contains("zoned: unable to stat"))
        .take(8)
        .collect();
    let tail: Vec<&str> = if errors.is_empty() {
        let mut t: Vec<&str> = r.mkfs_output.lines().rev().take(8).collect();
        t.reverse();
        t
    } else {
        errors
    };
    let text = tail.join("\n    ");
    let nospace = r.mkfs_output.contains("No space left")
        || r.mkfs_output.contains("ENOSPC")
        || r.mkfs_output.contains("not enough free space");
    // A full output filesystem shows up as a short write.
    let free = nix::sys::statvfs::statvfs(out_dir)
        .map(|s| s.blocks_available() as u64 * s.fragment_size() as u64)
        .ok();
    if let Some(free) = free.filter(|&f| f < counts.bytes.saturating_add(64 << 20)) {
        if nospace || r.mkfs_output.contains("Short write") {
            return anyhow!(
                "no space left for the image in {}: {} bytes free, the content alone is {} bytes; \
                 free space there or write the image elsewhere\n  mkfs.btrfs said:\n    {text}",
                out_dir.display(),
                free,
                counts.bytes
            );
        }
    }
    match (size, nospace) {
        (Size::Fixed(b), true) => anyhow!(
            "--size {b} is too small for the content ({} bytes in {} entries): it needs about {} \
             (use --size auto, or at least that much)\n  mkfs.btrfs said:\n    {text}",
            counts.bytes,
            counts.entries,
            ByteSize(estimate_min_size(counts.bytes, counts.entries))
        ),
        _ => anyhow!(
            "mkfs.btrfs failed (exit {}):\n    {text}",
            r.mkfs_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into())
        ),
    }
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

/// Runs the staging step in this process, without a user namespace: no
/// mounts, so the tree is staged on disk in scratch space, by copying.
fn run_direct(job: &mut StageJob) -> Result<rootbox_sandbox::ExitStatus> {
    job.direct = true;
    job.stage_dir = job.scratch.join("stage");
    std::fs::create_dir_all(&job.stage_dir)
        .with_context(|| format!("creating {}", job.stage_dir.display()))?;
    tracing::info!("staging by copying, without a user namespace");
    let code = stage::execute(job)?;
    Ok(rootbox_sandbox::ExitStatus::Exited(
        if code == ExitCode::SUCCESS { 0 } else { 1 },
    ))
}

/// With `--map subrange` the caller is not mapped into the namespace, so
/// the staging step reaches the caller's files with the "others" bits: the
/// plan directory becomes traversable, the result file writable, scratch
/// space a sticky shared directory, and the unnamed image file writable
/// (it has no name, so nobody else can open it; 0644 again when published).
fn open_to_the_namespace(
    plan_dir: &Path,
    result: &Path,
    scratch: &Path,
    out: &output::Target,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", p.display()))
    };
    set(plan_dir, 0o711)?;
    std::fs::write(result, b"").with_context(|| format!("creating {}", result.display()))?;
    set(result, 0o666)?;
    set(&plan_dir.join("job.json"), 0o644)?;
    if let Ok(reg) = std::fs::metadata(plan_dir.join("registration")) {
        let _ = reg;
        set(&plan_dir.join("registration"), 0o644)?;
    }
    set(scratch, 0o1777)?;
    out.share_with_namespace()
}
