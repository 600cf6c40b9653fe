//! Everything about mkfs.btrfs: finding it and its version (parent),
//! whether it may clone the data (`--reflink`, [`reflink_obstacle`]), the
//! run on the sealed staging tree (in the staging step, in a nested
//! sandbox), and reading its outcome (parent): the mkfs side of the btrfs
//! backend ([`super::btrfs`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use rootbox_images::fs::btrfs::{
    decide_reflink, estimate_min_size, BtrfsProgsVersion, MkfsPlan, MkfsSize, ReflinkDecision,
};
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Spec, Uuid};

use super::inputs::{Inputs, Staging};
use super::job::{Counts, MkfsJob, StageJob, StageResult};
use super::progress::Bar;
use super::request::Options;
use crate::output::Target;

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

/// The mkfs.btrfs run for `spec`, writing to `out`, and whether it clones
/// the data (`--reflink`) and why not; checked against the version found.
/// A reproducible build's `seed` fixes the filesystem UUID (unless the
/// spec gives one) and the device UUID. Of `opts`: `--no-userns` (the tree
/// is staged by copying into scratch space) and an explicit
/// `--reproducible`, which with a mkfs that cannot order `--rootdir` itself
/// means a sorted copy of the tree in the staging tmpfs.
pub fn job(
    mkfs: &MkfsBtrfs,
    spec: &Spec,
    inputs: &Inputs,
    staging: &Staging,
    seed: Option<&str>,
    out: &Target,
    opts: &Options,
) -> Result<(MkfsJob, ReflinkDecision)> {
    let direct = opts.no_userns;
    let explicit = opts.reproducible.as_ref().is_some_and(|r| r.explicit);
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
    let mut job = MkfsJob {
        program: mkfs.program.clone(),
        label: inputs.label.clone(),
        uuid,
        device_uuid,
        compress: spec.compress,
        subvol_args: inputs.layout.mkfs_subvol_args(),
        inode_flag_args: inputs.layout.mkfs_inode_flag_args(),
        size: spec.size,
        headroom: spec.headroom,
        output: out.mkfs_path(),
        deterministic: seed.is_some() && mkfs.version >= DETERMINISTIC,
        reflink: false,
    };
    // The features the run will use do not depend on the content's size.
    let without = plan(&job, &staging.stage_dir, &Counts::default());
    without.check_version(&mkfs.version)?;
    let sorted_copy = explicit && !job.deterministic;
    let obstacle = reflink_obstacle(staging, out, sorted_copy, direct);
    let decision = decide_reflink(spec.reflink, &without, &mkfs.version, obstacle)?;
    job.reflink = decision.used;
    match &decision.reason {
        Some(r) => tracing::debug!("mkfs.btrfs copies the data: {r}"),
        None => tracing::debug!("mkfs.btrfs clones the data (--reflink)"),
    }
    Ok((job, decision))
}

/// What keeps mkfs.btrfs from cloning every file it reads into the image,
/// if anything. `FICLONERANGE` works only within one filesystem (one
/// superblock: across its mounts and btrfs subvolumes too) that can clone
/// (btrfs; XFS made with reflink, the default since xfsprogs 5.1), and
/// mkfs 6.16.1–7.3 fails on the first file it cannot clone. mkfs reads:
/// - in a namespace, the sources through bind mounts (the rootfs's
///   subtrees, every store path, and whatever is mounted below them),
///   copies and the registration in scratch space; a sorted copy (an
///   explicit `--reproducible` with mkfs older than 7.3) puts everything
///   into the staging tmpfs instead;
/// - without one (`direct`), copies in scratch space only.
pub fn reflink_obstacle(
    staging: &Staging,
    out: &Target,
    sorted_copy: bool,
    direct: bool,
) -> Option<String> {
    if sorted_copy && !direct {
        return Some("a reproducible build with this mkfs stages its tree as a sorted copy in memory (tmpfs)".into());
    }
    let mounts = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => Mounts::parse(&text),
        Err(e) => return Some(format!("cannot read /proc/self/mountinfo: {e}")),
    };
    let fs_of = |what: &str, p: &Path| -> Result<Mount, String> {
        let canon = std::fs::canonicalize(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        mounts
            .containing(&canon)
            .cloned()
            .ok_or_else(|| format!("no mount holds {what} {}", p.display()))
    };
    let check = || -> Result<(), String> {
        let image = fs_of("the output directory", out.dir())?;
        if !["btrfs", "xfs"].contains(&image.fstype.as_str()) {
            return Err(format!(
                "the image is written on {} ({}), which cannot clone file data (btrfs and XFS can)",
                image.mount_point.display(),
                image.fstype
            ));
        }
        let mut read: Vec<(&str, &Path)> = vec![("scratch space", staging.scratch.path())];
        if !direct {
            let roots = staging.roots.iter().filter_map(|r| r.src.as_deref());
            read.extend(roots.filter(|p| p.exists()).map(|p| ("the rootfs", p)));
            read.extend(
                staging
                    .store_paths
                    .iter()
                    .map(|p| ("store path", p.as_path())),
            );
        }
        for (what, p) in read {
            let m = fs_of(what, p)?;
            if m.dev != image.dev {
                return Err(format!(
                    "{what} {} is on {} ({}), another filesystem than the image's {}",
                    p.display(),
                    m.mount_point.display(),
                    m.fstype,
                    image.mount_point.display()
                ));
            }
            // nftw descends into mounts below a source: mkfs reads them too.
            if !direct {
                let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                let sub = mounts.below(&canon).find(|s| s.dev != image.dev).cloned();
                if let Some(sub) = sub {
                    return Err(format!(
                        "{} ({}), mounted inside {what} {}, is another filesystem than the image's",
                        sub.mount_point.display(),
                        sub.fstype,
                        p.display()
                    ));
                }
            }
        }
        Ok(())
    };
    check().err()
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// `major:minor` of the superblock: the same for every mount and btrfs
    /// subvolume of one filesystem (unlike `st_dev`, which differs per
    /// btrfs subvolume).
    dev: String,
    mount_point: PathBuf,
    fstype: String,
}

/// The mount table of this mount namespace.
struct Mounts(Vec<Mount>);

impl Mounts {
    /// Parses `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT MOUNTPOINT
    /// OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTIONS`, with spaces, tabs,
    /// newlines and `\` in the mount point written as octal escapes.
    fn parse(text: &str) -> Mounts {
        let mounts = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let sep = fields.iter().position(|f| *f == "-")?;
                Some(Mount {
                    dev: fields.get(2)?.to_string(),
                    mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
                    fstype: fields.get(sep + 1)?.to_string(),
                })
            })
            .collect();
        Mounts(mounts)
    }

    /// The mount `path` (canonical) is on: the last-mounted of those whose
    /// mount point is the longest prefix of it.
    fn containing(&self, path: &Path) -> Option<&Mount> {
        self.0
            .iter()
            .rev()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.components().count())
    }

    /// Mounts strictly below `path`.
    fn below<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a Mount> + 'a {
        self.0
            .iter()
            .filter(move |m| m.mount_point != path && m.mount_point.starts_with(path))
    }
}

/// `\040` → space, as the kernel escapes mount points.
fn unescape_octal(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let n = d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
                out.push(n as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// The features mkfs.btrfs enabled in the image, as its superblock says
/// (e.g. `block-group-tree`, the default since btrfs-progs 6.19, which
/// kernels before 6.1 cannot mount read-write); empty when unreadable.
pub fn features(image: &Path) -> Vec<String> {
    match rootbox_btrfs::Image::open(image) {
        Ok(i) => {
            rootbox_btrfs::format::feature_names(i.info().incompat_flags, i.info().compat_ro_flags)
        }
        Err(_) => Vec::new(),
    }
}

/// In the staging step: mkfs.btrfs on the sealed staging tree, its
/// status and output put into `result`. mkfs.btrfs 7.3's own
/// reproducibility: the epoch for every time it writes, UUIDs derived from
/// -U, --rootdir in a fixed order.
pub fn run_staged(m: &MkfsJob, job: &StageJob, result: &mut StageResult) -> Result<()> {
    let env: Vec<(&str, String)> = if m.deterministic {
        let epoch = job.epoch.unwrap_or(result.max_mtime);
        vec![
            ("SOURCE_DATE_EPOCH", epoch.to_string()),
            ("DETERMINISTIC_SEED", "1".to_string()),
        ]
    } else {
        Vec::new()
    };
    let (status, output) = run(m, &job.stage_dir, &result.counts, job.direct, &env)?;
    result.tool_status = Some(status);
    result.tool_output = output;
    Ok(())
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
        inode_flag_args: job.inode_flag_args.clone(),
        size,
        rootdir: rootdir.to_path_buf(),
        output: job.output.clone(),
        reflink: job.reflink,
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
    // On a terminal: the image's growth against the size estimate, watched
    // by a thread started only once the sandbox has forked (a fork from a
    // process with other threads could inherit a lock one of them held).
    let watch = || {
        let estimate = estimate_min_size(counts.bytes, counts.entries);
        Bar::bytes("mkfs", estimate).watch_allocation(job.output.clone())
    };
    let code = if direct {
        let _watch = watch();
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
            .spawn()
            .with_context(|| format!("running {} in a nested sandbox", job.program.display()))?;
        let _watch = watch();
        let status = status
            .wait()
            .with_context(|| format!("running {}", job.program.display()))?;
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
    if result.tool_status != Some(0) {
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
        .tool_output
        .lines()
        .filter(|l| l.starts_with("ERROR:") && !l.contains("zoned: unable to stat"))
        .take(8)
        .collect();
    let tail: Vec<&str> = if errors.is_empty() {
        let mut t: Vec<&str> = r.tool_output.lines().rev().take(8).collect();
        t.reverse();
        t
    } else {
        errors
    };
    let text = tail.join("\n    ");
    let nospace = r.tool_output.contains("No space left")
        || r.tool_output.contains("ENOSPC")
        || r.tool_output.contains("not enough free space");
    // A full output filesystem shows up as a short write.
    let free = nix::sys::statvfs::statvfs(out_dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .ok();
    if let Some(free) = free.filter(|&f| f < counts.bytes.saturating_add(64 << 20)) {
        if nospace || r.tool_output.contains("Short write") {
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
            r.tool_status
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_the_filesystem_of_a_path() {
        let m = Mounts::parse(
            "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             30 22 0:40 / /var/tmp/my\\040btrfs rw - btrfs /dev/loop0 rw,space_cache=v2\n\
             31 30 0:40 /@home /var/tmp/my\\040btrfs/home rw - btrfs /dev/loop0 rw,subvol=/@home\n\
             32 30 0:45 / /var/tmp/my\\040btrfs/tmp rw - tmpfs tmpfs rw\n\
             garbage line\n",
        );
        assert_eq!(m.0.len(), 4);
        let fs = |p: &str| {
            m.containing(Path::new(p))
                .map(|m| (m.dev.as_str(), m.fstype.as_str()))
        };
        assert_eq!(fs("/etc/passwd"), Some(("0:21", "ext4")));
        assert_eq!(fs("/var/tmp/my btrfs/a"), Some(("0:40", "btrfs")));
        // Another subvolume of the same filesystem: the same superblock.
        assert_eq!(fs("/var/tmp/my btrfs/home/alice"), Some(("0:40", "btrfs")));
        assert_eq!(fs("/var/tmp/my btrfsx"), Some(("0:21", "ext4")));
        let below: Vec<_> = m
            .below(Path::new("/var/tmp/my btrfs"))
            .map(|m| m.fstype.as_str())
            .collect();
        assert_eq!(below, ["btrfs", "tmpfs"]);
        assert_eq!(unescape_octal("a\\134b\\011\\x"), "a\\b\t\\x");
    }
}
