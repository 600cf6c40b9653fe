//! Everything about mkfs.btrfs: finding it and its version (parent), the
//! run on the sealed staging tree (in the staging step, in a nested
//! sandbox), and reading its outcome (parent). Another filesystem gets a
//! module of its own beside this one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use rootbox_images::mkfs::{estimate_min_size, BtrfsProgsVersion, MkfsPlan, MkfsSize};
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Spec, Uuid};

use super::inputs::{Inputs, Staging};
use super::job::{Counts, MkfsJob, StageResult};
use super::output::Target;

/// The mkfs.btrfs this build will run.
/// The first mkfs.btrfs that orders `--rootdir` deterministically and takes
/// its times and UUIDs from SOURCE_DATE_EPOCH and DETERMINISTIC_SEED (its
/// man page, ENVIRONMENT; tests/nix/NOTES.md has what it still leaves).
pub const DETERMINISTIC: BtrfsProgsVersion = BtrfsProgsVersion::new(7, 3, 0);

pub struct MkfsBtrfs {
    pub program: PathBuf,
    pub version: BtrfsProgsVersion,
}

/// Finds mkfs.btrfs on PATH and reads its version.
pub fn find_mkfs_btrfs() -> Result<MkfsBtrfs> {
    let program = rootbox_sandbox::find_program("mkfs.btrfs").ok_or_else(|| {
        anyhow!("mkfs.btrfs not found on PATH: install btrfs-progs 6.12 or newer (Debian bookworm: apt-get install -t bookworm-backports btrfs-progs)")
    })?;
    let version_text = Command::new(&program)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .with_context(|| format!("running {} --version", program.display()))?;
    let version = BtrfsProgsVersion::parse(&version_text).ok_or_else(|| {
        anyhow!(
            "cannot read the version of {} from {:?}",
            program.display(),
            version_text.trim()
        )
    })?;
    Ok(MkfsBtrfs { program, version })
}

/// The mkfs.btrfs run for `spec`, writing to `out`; checked against the
/// version found. A reproducible build's `seed` fixes the filesystem UUID
/// (unless the spec gives one) and the device UUID.
pub fn job(
    mkfs: &MkfsBtrfs,
    spec: &Spec,
    inputs: &Inputs,
    staging: &Staging,
    seed: Option<&str>,
    out: &Target,
) -> Result<MkfsJob> {
    let (uuid, device_uuid) = match seed {
        Some(seed) => {
            let derive =
                |what| Uuid::from_bytes(rootbox_btrfs::derived_uuid(seed.as_bytes(), what, &[]));
            (
                Some(inputs.uuid.clone().unwrap_or_else(|| derive("fsid"))),
                Some(derive("device")),
            )
        }
        None => (inputs.uuid.clone(), None),
    };
    let job = MkfsJob {
        program: mkfs.program.clone(),
        label: inputs.label.clone(),
        uuid,
        device_uuid,
        compress: spec.compress,
        subvol_args: inputs.layout.mkfs_subvol_args(),
        size: spec.size,
        headroom: spec.headroom,
        output: out.mkfs_path(),
        deterministic: seed.is_some() && mkfs.version >= DETERMINISTIC,
    };
    // The features the run will use do not depend on the content's size.
    plan(&job, &staging.stage_dir, &Counts::default()).check_version(&mkfs.version)?;
    Ok(job)
}

/// The job a build of another filesystem (`crate::fs`) sends along: only
/// its output path and the spec's fields are used; mkfs.btrfs is not run.
pub fn job_for_other(spec: &Spec, inputs: &Inputs, out: &Target) -> MkfsJob {
    MkfsJob {
        program: PathBuf::from("mkfs.btrfs"),
        label: inputs.label.clone(),
        uuid: inputs.uuid.clone(),
        device_uuid: None,
        compress: spec.compress,
        subvol_args: Vec::new(),
        size: spec.size,
        headroom: spec.headroom,
        output: out.mkfs_path(),
        deterministic: false,
    }
}

/// The mkfs plan for content of `counts`.
pub fn plan(job: &MkfsJob, rootdir: &Path, counts: &Counts) -> MkfsPlan {
    let size = match job.size {
        Size::Fixed(b) => MkfsSize::Bytes(b.bytes()),
        Size::Auto if job.headroom.bytes() == 0 => MkfsSize::Shrink,
        Size::Auto => MkfsSize::Bytes(
            estimate_min_size(counts.bytes, counts.entries).saturating_add(job.headroom.bytes()),
        ),
    };
    MkfsPlan {
        label: job.label.clone(),
        uuid: job.uuid.clone(),
        device_uuid: job.device_uuid.clone(),
        compress: job.compress,
        subvol_args: job.subvol_args.clone(),
        size,
        rootdir: rootdir.to_path_buf(),
        output: job.output.clone(),
        reflink: false,
    }
}

/// In the staging step: runs mkfs.btrfs on the staged tree at `rootdir`;
/// its exit code (128+N for a signal) and its output. `env`: variables
/// for mkfs on top of the step's own.
///
/// In a namespace, mkfs runs in a nested sandbox: the staging mounts then
/// belong to a more privileged namespace than mkfs, so the kernel locks
/// them read-only — mkfs (or anything posing as it on PATH) cannot
/// remount the bound sources writable. Without a namespace (`direct`)
/// there are no mounts, and mkfs runs as a plain child.
pub fn run(
    job: &MkfsJob,
    rootdir: &Path,
    counts: &Counts,
    direct: bool,
    env: &[(&str, String)],
) -> Result<(i32, String)> {
    use std::io::{Read, Seek};
    let args = plan(job, rootdir, counts).args();
    let mut log = tempfile::tempfile().context("creating a file for mkfs.btrfs's output")?;
    let code = if direct {
        let out = Command::new(&job.program)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .with_context(|| format!("running {}", job.program.display()))?;
        out.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&out).unwrap_or(0)
        })
    } else {
        let argv = std::iter::once(OsString::from(&job.program)).chain(args);
        let mut sandbox = rootbox_sandbox::Sandbox::new();
        for (k, v) in env {
            sandbox = sandbox.env(*k, v);
        }
        let status = sandbox
            .command(argv)
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .run()
            .with_context(|| format!("running {} in a nested sandbox", job.program.display()))?;
        // Interrupted (the signal was forwarded to mkfs): stop the same
        // way, so the build reports the interruption, not a failed mkfs.
        if let rootbox_sandbox::ExitStatus::Signaled(sig) = status {
            if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&sig) {
                if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
                    let _ = nix::sys::signal::raise(sig);
                }
            }
        }
        status.code()
    };
    let mut output = String::new();
    log.rewind()?;
    log.read_to_string(&mut output).ok();
    Ok((code, output))
}

/// Back in the parent: whether mkfs made the image the spec asked for. A
/// failed run is explained from its output; `status` is how the staging
/// step itself ended, checked once mkfs's verdict is known.
pub fn check_made(
    result: &StageResult,
    status: &rootbox_sandbox::ExitStatus,
    size: &Size,
    out: &Target,
) -> Result<()> {
    let counts = &result.counts;
    if result.mkfs_status != Some(0) {
        return Err(failure(result, size, counts, out.dir()));
    }
    if !status.success() {
        bail!("the staging step ended with {status}");
    }
    // mkfs.btrfs silently grows a --byte-count too small for the content.
    if let Size::Fixed(b) = size {
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
    Ok(())
}

/// What a failed mkfs.btrfs run means, from its output.
fn failure(r: &StageResult, size: &Size, counts: &Counts, out_dir: &Path) -> anyhow::Error {
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
        .map(|s| s.blocks_available() * s.fragment_size())
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

/// The UUID and label the made image carries, read back with rootbox's
/// btrfs reader (empty when it cannot be read).
pub fn identity(image: &Path) -> (String, String) {
    match rootbox_btrfs::Image::open(image) {
        Ok(i) => (i.info().fsid.clone(), i.info().label.clone()),
        Err(_) => (String::new(), String::new()),
    }
}
