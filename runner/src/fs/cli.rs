//! `rootbox __fs-make` and `rootbox __fs-read`: the per-filesystem step of
//! `rootbox build --filesystem` on a tree by itself, and rootbox's reader
//! of those images (`super::read`, through `rootbox_fsimage`), for tests
//! and for trying a filesystem by hand.
//! `__fs-make` runs where it is started: inside `rootbox run` it sees the
//! owners a namespace sees.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use rootbox_images::fs::{Filesystem, Options, Reproducible};
use rootbox_images::owners::Manifest;
use rootbox_images::size::{ByteSize, Size};

/// Arguments of `rootbox __fs-make`.
#[derive(Args, Debug)]
pub struct MakeArgs {
    /// ext4, erofs or squashfs.
    #[arg(long)]
    filesystem: String,
    /// The staged tree.
    #[arg(long)]
    source: PathBuf,
    /// The image to write (nothing is left there on failure).
    #[arg(short, long)]
    output: PathBuf,
    /// "auto" or a size such as 64M.
    #[arg(long, default_value = "auto")]
    size: String,
    /// Free space added to an auto size.
    #[arg(long)]
    headroom: Option<String>,
    /// An ownership manifest.
    #[arg(long)]
    owners: Option<PathBuf>,
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    uuid: Option<String>,
    #[arg(long)]
    compress: Option<String>,
    /// Pretend the spec lays out subvolumes (to see the refusal).
    #[arg(long)]
    subvolumes: bool,
    /// Same inputs, same bytes (also on with SOURCE_DATE_EPOCH).
    #[arg(long)]
    reproducible: bool,
    /// The seed of the derived UUID.
    #[arg(long)]
    seed: Option<String>,
}

/// Arguments of `rootbox __fs-read`.
#[derive(Args, Debug)]
pub struct ReadArgs {
    /// ext4, erofs or squashfs.
    #[arg(long)]
    filesystem: String,
    /// The image.
    image: PathBuf,
}

fn newest_mtime(p: &Path) -> Result<i64> {
    let m = std::fs::symlink_metadata(p).with_context(|| format!("lstat {}", p.display()))?;
    let mut t = m.mtime();
    if m.is_dir() {
        for e in std::fs::read_dir(p).with_context(|| format!("listing {}", p.display()))? {
            t = t.max(newest_mtime(&e?.path())?);
        }
    }
    Ok(t)
}

/// `rootbox __fs-make`: prints what was made as JSON.
pub fn make(a: &MakeArgs) -> Result<std::process::ExitCode> {
    let filesystem: Filesystem = a.filesystem.parse()?;
    let size: Size = a.size.parse()?;
    let headroom: ByteSize = match &a.headroom {
        Some(h) => h.parse()?,
        None => ByteSize(0),
    };
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(v.trim().parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?),
        Err(_) => None,
    };
    let reproducible = if a.reproducible || epoch.is_some() {
        let epoch = match epoch {
            Some(e) => e,
            None => newest_mtime(&a.source)?.max(0) as u64,
        };
        let seed = a.seed.clone().unwrap_or_else(|| {
            format!(
                "rootbox/1 filesystem={filesystem} label={:?} compress={:?}",
                a.label, a.compress
            )
        });
        let purpose = format!("{filesystem} uuid");
        Some(Reproducible {
            epoch,
            uuid: rootbox_images::spec::Uuid::from_bytes(rootbox_btrfs::derived_uuid(
                seed.as_bytes(),
                &purpose,
                &[],
            ))
            .to_string(),
        })
    } else {
        None
    };
    let manifest = match &a.owners {
        Some(p) => Some(Manifest::load(p)?),
        None => None,
    };
    let out_dir = match a.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".rootbox-image-")
        .tempfile_in(&out_dir)
        .with_context(|| format!("creating a temporary image in {}", out_dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("rootbox-fs-")
        .tempdir()
        .context("creating scratch space")?;
    let job = super::Job {
        filesystem,
        source: a.source.clone(),
        image: temp.path().to_path_buf(),
        options: Options {
            label: a.label.clone(),
            uuid: a.uuid.clone(),
            compress: a.compress.clone(),
            size,
            headroom,
            subvolumes: a.subvolumes,
            reproducible,
        },
        manifest,
        archive: None,
        overflow: super::overflow_ids(),
        scratch: scratch.path().to_path_buf(),
        origin: super::Origin {
            rootfs: Some(a.source.display().to_string()),
            store_dir: None,
        },
        direct: false,
        specials: Default::default(),
    };
    let made = super::make(&job)?;
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod 644 {}", temp.path().display()))?;
    temp.persist(&a.output)
        .with_context(|| format!("moving the image to {}", a.output.display()))?;
    println!("{}", serde_json::to_string_pretty(&made)?);
    Ok(std::process::ExitCode::SUCCESS)
}

/// `rootbox __fs-read`: every inode of an image as JSON, read with
/// rootbox's reader of its format (`system.*` xattrs left out, as the
/// comparison with a tree leaves them out).
pub fn read(a: &ReadArgs) -> Result<std::process::ExitCode> {
    let filesystem: Filesystem = a.filesystem.parse()?;
    let inodes = super::read(filesystem, &a.image)?;
    println!("{}", serde_json::to_string_pretty(&inodes)?);
    Ok(std::process::ExitCode::SUCCESS)
}

/// What `rootbox __fs-stage` is given: a build's filesystem step and
/// where its staged tree, image and scratch space are.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StageStep {
    /// The step.
    pub job: super::StagedJob,
    /// The staged tree.
    pub source: PathBuf,
    /// Scratch space.
    pub scratch: PathBuf,
    /// The newest source mtime (the default epoch).
    pub max_mtime: i64,
}

/// The outcome `rootbox __fs-stage` writes for the staging step.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StageOutcome {
    /// What was made, on success.
    pub made: Option<super::Made>,
    /// The error, with its causes, on failure.
    pub error: Option<String>,
}

/// `rootbox __fs-stage STEP OUTCOME`: runs a build's filesystem step in the
/// nested sandbox the staging step starts it in (see
/// `pipeline::stage`), and writes what happened to OUTCOME.
pub fn stage(step: &Path, outcome: &Path) -> Result<std::process::ExitCode> {
    let text = std::fs::read(step).with_context(|| format!("reading {}", step.display()))?;
    let s: StageStep = serde_json::from_slice(&text).context("the filesystem step")?;
    let result = super::run_staged(&s.job, &s.source, &s.scratch, s.max_mtime);
    let (code, o) = match result {
        Ok(made) => (
            0,
            StageOutcome {
                made: Some(made),
                error: None,
            },
        ),
        Err(e) => (
            1,
            StageOutcome {
                made: None,
                error: Some(format!("{e:#}")),
            },
        ),
    };
    std::fs::write(outcome, serde_json::to_vec(&o)?)
        .with_context(|| format!("writing {}", outcome.display()))?;
    Ok(std::process::ExitCode::from(code))
}

/// In a build's staging step: runs `rootbox __fs-stage` for `step` in a
/// nested sandbox — for the reason mkfs.btrfs runs in one
/// (`pipeline::mkfs::run`): the staging mounts are then locked read-only
/// to it. The owners it sees are the same: the nested map repeats this
/// one.
pub fn run_nested(step: &StageStep) -> Result<StageOutcome> {
    let dir = tempfile::Builder::new()
        .prefix("fs-step-")
        .tempdir_in(&step.scratch)
        .context("creating a directory for the filesystem step")?;
    let (step_file, outcome) = (
        dir.path().join("step.json"),
        dir.path().join("outcome.json"),
    );
    std::fs::write(&step_file, serde_json::to_vec(step)?)?;
    let argv = [
        std::ffi::OsString::from("/proc/self/exe"),
        "__fs-stage".into(),
        step_file.into(),
        outcome.clone().into(),
    ];
    let status = rootbox_sandbox::Sandbox::new()
        .command(argv)
        .run()
        .context("running the filesystem step in a nested sandbox")?;
    Ok(match std::fs::read(&outcome) {
        Ok(b) if !b.is_empty() => {
            serde_json::from_slice(&b).context("the filesystem step's outcome")?
        }
        _ => StageOutcome {
            made: None,
            error: Some(format!(
                "the filesystem step ended with {status} and said nothing"
            )),
        },
    })
}
