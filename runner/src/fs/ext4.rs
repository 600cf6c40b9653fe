//! ext4: `mkfs.ext4 -d`, `resize2fs -M`, owner fixes (and a reproducible
//! build's clamped times and sorted xattrs) written with `debugfs -w`, then
//! `e2fsck -fn`. What the image holds is read with rootbox's ext4 reader
//! (`rootbox_fsimage::ext4`), here to find the inodes to fix and in
//! `super::read` to verify; no debugfs output is parsed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use rootbox_fsimage::ext4::Time;
use rootbox_fsimage::Entry;
use rootbox_images::fs::ext4::{self as plan, Content, Field, BLOCK};
use rootbox_images::fs::{too_small, Filesystem, Fix, FsError, Name};
use rootbox_images::size::Size;

use super::specials::{split, S_IFBLK, S_IFCHR};
use super::{output, Job, S_IFMT};

fn tool(name: &str, job: &Job) -> Command {
    let mut c = Command::new(name);
    c.env("DEBUGFS_PAGER", "__none__");
    for (k, v) in plan::env(job.options.reproducible.as_ref()) {
        c.env(k, v);
    }
    c
}

/// Makes the ext4 image of `job` (see the module doc of `super`).
pub fn make(job: &Job, content: Content, fixes: &[Fix]) -> Result<()> {
    let inodes = plan::inode_count(content);
    let bytes = match job.options.size {
        Size::Auto => plan::estimate(content),
        Size::Fixed(b) => b.bytes() / BLOCK * BLOCK,
    };
    if let Err(e) = mkfs(job, &job.image, bytes, inodes) {
        if let Size::Fixed(b) = job.options.size {
            // Too small? Find out what it takes, to say so.
            let trial = job.scratch.join("size-trial.ext4");
            mkfs(job, &trial, plan::estimate(content), inodes)
                .context("making a trial image to measure the size needed")?;
            let needed = shrink(job, &trial)? * BLOCK;
            let _ = fs::remove_file(&trial);
            if needed > b.bytes() {
                return Err(too_small(Filesystem::Ext4, b.bytes(), needed).into());
            }
        }
        return Err(e);
    }
    if job.options.size == Size::Auto {
        let min = shrink(job, &job.image)?;
        let blocks = plan::with_headroom(min, job.options.headroom.bytes());
        if blocks != min {
            output(
                tool("resize2fs", job)
                    .arg(&job.image)
                    .arg(blocks.to_string()),
                "resize2fs (adding the headroom)",
            )?;
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&job.image)
            .with_context(|| format!("opening {}", job.image.display()))?;
        f.set_len(blocks * BLOCK)
            .with_context(|| format!("truncating {}", job.image.display()))?;
    }
    apply_fixes(job, fixes)?;
    output(
        tool("e2fsck", job).arg("-fn").arg(&job.image),
        "e2fsck -fn (checking the image)",
    )?;
    Ok(())
}

fn mkfs(job: &Job, image: &Path, bytes: u64, inodes: u64) -> Result<()> {
    // mke2fs wants an existing file of any length; it writes `bytes`.
    fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    let args = plan::mkfs_args(&job.options, &job.source, image, bytes, inodes);
    output(tool("mkfs.ext4", job).args(&args), "mkfs.ext4").map(|_| ())
}

/// `resize2fs -M`: shrinks the filesystem to its minimum; its block count.
fn shrink(job: &Job, image: &Path) -> Result<u64> {
    output(
        tool("resize2fs", job).arg("-M").arg(image),
        "resize2fs -M (shrinking to the minimum)",
    )?;
    let info = output(tool("dumpe2fs", job).arg("-h").arg(image), "dumpe2fs -h")?;
    info.lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("dumpe2fs -h {} printed no block count", image.display()))
}

/// Writes `fixes` (and, for a reproducible build, the clamped times, the
/// atime the mtime, and the xattrs in name order) into the image with one
/// `debugfs -w -f` run. What the image holds is read with rootbox's ext4
/// reader.
fn apply_fixes(job: &Job, fixes: &[Fix]) -> Result<()> {
    let entries = rootbox_fsimage::ext4::read(&job.image)
        .with_context(|| format!("reading the ext4 image {}", job.image.display()))?;
    let by_path: HashMap<&[u8], &Entry> = entries.iter().map(|e| (&e.path[..], e)).collect();
    // The owner and mode each inode ends with.
    let mut last: HashMap<u64, (u32, u32, u32)> = entries
        .iter()
        .map(|e| (e.ino, (e.uid, e.gid, e.mode)))
        .collect();
    let mut edits = Vec::new();
    for f in fixes {
        let e = by_path
            .get(f.path.as_bytes())
            .ok_or_else(|| anyhow!("{} was staged but is not in the ext4 image", f.path))?;
        edits.extend(
            plan::fix_fields(e.uid, e.gid, e.mode, f)
                .into_iter()
                .map(|x| (e.ino, x)),
        );
        last.insert(e.ino, (f.uid, f.gid, f.mode));
    }
    let devices = devices(job, &entries, &mut last)?;
    // Capabilities a build without a namespace could not stage.
    let mut caps: HashMap<u64, &[u8]> = HashMap::new();
    for c in &job.specials.caps {
        let e = by_path.get(&c.path[..]).ok_or_else(|| {
            anyhow!(
                "{} was staged but is not in the ext4 image",
                Name::from_bytes(c.path.clone())
            )
        })?;
        caps.insert(e.ino, &c.value);
    }
    let mut script = String::new();
    let reproducible = job.options.reproducible.as_ref();
    if let Some(rep) = reproducible {
        edits = reproducible_edits(job, &last, rep.epoch)?;
    }
    let mut done = HashSet::new();
    for e in entries.iter().filter(|e| done.insert(e.ino)) {
        let cap = caps.get(&e.ino).copied();
        if reproducible.is_some() || cap.is_some() {
            script += &sorted_xattrs(job, e, cap)?;
        }
    }
    script += &plan::debugfs_script(&edits);
    for (ino, path, mode, number) in devices {
        script += &plan::device_script(ino, &path, mode, number)?;
    }
    if script.is_empty() {
        return Ok(());
    }
    run_debugfs(job, &script)
}

/// A reproducible image's edits, inode by inode in inode order: the owner
/// and mode of `last` and the times, each written whether it changes or
/// not, so that the command file, and what debugfs writes (the superblock
/// counts it in `s_kbytes_written`), depends only on the image the build
/// ends with: without a namespace mkfs records the caller's ids on every
/// inode, in one the ids the namespace shows.
fn reproducible_edits(
    job: &Job,
    last: &HashMap<u64, (u32, u32, u32)>,
    epoch: u64,
) -> Result<Vec<(u64, Field)>> {
    let times = rootbox_fsimage::ext4::times(&job.image)
        .with_context(|| format!("reading the times of {}", job.image.display()))?;
    let mut edits = Vec::new();
    for (ino, t) in times {
        let &(uid, gid, mode) = last
            .get(&ino)
            .ok_or_else(|| anyhow!("inode {ino} of the ext4 image has no path"))?;
        let crtime = t.crtime.unwrap_or(Time {
            seconds: 0,
            nanoseconds: 0,
        });
        let [mtime, ctime, crtime] = [t.mtime, t.ctime, crtime].map(|t| (t.seconds, t.nanoseconds));
        let fields = plan::owner_fields(uid, gid, mode)
            .into_iter()
            .chain(plan::time_fields(mtime, ctime, crtime, epoch));
        edits.extend(fields.map(|x| (ino, x)));
    }
    Ok(edits)
}

/// The device nodes to write with debugfs: those a build without a
/// namespace staged as FIFOs, and, in a reproducible build, every one (so
/// that what debugfs writes does not depend on the staging): inode, path,
/// mode (`last`'s permission bits, which it is updated to), number.
type Node = (u64, Name, u32, (u32, u32));
fn devices(
    job: &Job,
    entries: &[Entry],
    last: &mut HashMap<u64, (u32, u32, u32)>,
) -> Result<Vec<Node>> {
    let staged: HashMap<&[u8], &super::specials::Device> = job
        .specials
        .devices
        .iter()
        .map(|d| (&d.path[..], d))
        .collect();
    let mut nodes = Vec::new();
    for e in entries {
        let is_node = matches!(e.mode & S_IFMT, S_IFCHR | S_IFBLK);
        let (kind, number) = match staged.get(&e.path[..]) {
            Some(d) => (d.mode & S_IFMT, split(d.rdev)),
            None if is_node && job.options.reproducible.is_some() => {
                (e.mode & S_IFMT, e.rdev.unwrap_or((0, 0)))
            }
            None => continue,
        };
        let l = last
            .get_mut(&e.ino)
            .ok_or_else(|| anyhow!("inode {} of the ext4 image has no path", e.ino))?;
        l.2 = kind | (l.2 & 0o7777);
        nodes.push((e.ino, Name::from_bytes(e.path.clone()), l.2, number));
    }
    if nodes
        .iter()
        .filter(|n| staged.contains_key(n.1.as_bytes()))
        .count()
        != staged.len()
    {
        bail!("a device node staged as a FIFO is not in the ext4 image");
    }
    Ok(nodes)
}

/// The debugfs commands that set the (non-`system.`) xattrs of `e`, and
/// `cap` as `security.capability`, again in name order, their values
/// written to files in the scratch space; nothing for fewer than two
/// unless one is `security.capability` (set by debugfs in a build without
/// a namespace, so a reproducible build sets it in every build).
fn sorted_xattrs(job: &Job, e: &Entry, cap: Option<&[u8]>) -> Result<String> {
    const CAP: &[u8] = b"security.capability";
    let mut xattrs: Vec<(&[u8], &[u8])> = e
        .xattrs
        .iter()
        .flatten()
        .filter(|(n, _)| !n.starts_with(b"system.") && (cap.is_none() || n != &CAP))
        .map(|(n, v)| (&n[..], &v[..]))
        .collect();
    if let Some(v) = cap {
        xattrs.push((CAP, v));
    }
    if xattrs.len() < 2 && !xattrs.iter().any(|(n, _)| *n == CAP) {
        return Ok(String::new());
    }
    let path = Name::from_bytes(e.path.clone());
    let mut files = Vec::new();
    for (k, (name, value)) in xattrs.into_iter().enumerate() {
        let name = String::from_utf8(name.to_vec()).map_err(|_| FsError::PathSyntax {
            path: path.clone(),
            tool: "debugfs",
            why: "an xattr name that is not UTF-8",
        })?;
        let file = job.scratch.join(format!("xattr-{}-{k}", e.ino));
        fs::write(&file, value).with_context(|| format!("writing {}", file.display()))?;
        files.push((name, file));
    }
    Ok(plan::xattr_script(e.ino, &path, &files)?)
}

/// Runs a `debugfs -w` command file with the environment of `job`. Any
/// complaint on stderr fails: debugfs exits 0 after a failed command.
fn run_debugfs(job: &Job, script: &str) -> Result<()> {
    let mut file = tempfile::NamedTempFile::new().context("creating a debugfs command file")?;
    file.write_all(script.as_bytes())
        .context("writing the debugfs command file")?;
    let out = tool("debugfs", job)
        .arg("-w")
        .arg("-f")
        .arg(file.path())
        .arg(&job.image)
        .output()
        .context("running debugfs (is e2fsprogs installed?)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        bail!(
            "debugfs -w on {} failed ({}): {}",
            job.image.display(),
            out.status,
            complaints.join("; ")
        );
    }
    Ok(())
}
