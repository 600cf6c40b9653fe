//! squashfs: `mksquashfs` with the owner fixes as pseudo definitions,
//! then `unsquashfs -stat` to check the superblock; the image is read
//! back by `super::read` (rootbox's squashfs reader, which sees xattrs
//! and inode numbers too).

use std::fs;
use std::process::Command;

use anyhow::{bail, Context, Result};
use rootbox_images::fs::squashfs as plan;
use rootbox_images::fs::{Filesystem, Fix, FsError, Name};

use super::specials::split;
use super::{output, Inode, Job};

/// Makes the squashfs image of `job`; the fixes go to mksquashfs, and so
/// do the device nodes and file capabilities a build without a namespace
/// could not stage (`super::specials`), as `expected` holds them.
pub fn make(job: &Job, fixes: &[Fix], expected: &[Inode]) -> Result<()> {
    let pseudo = job.scratch.join("squashfs.pseudo");
    let (nodes, caps) = specials(job, expected)?;
    let text = plan::pseudo_file(fixes, &nodes, &caps).with_context(|| {
        let odd = fixes.iter().find(|f| f.path.contains(b'\n'));
        match odd {
            Some(f) => format!(
                "{} needs its owner set in the image",
                job.origin.describe(&f.path)
            ),
            None => "writing mksquashfs's pseudo definitions".to_string(),
        }
    })?;
    fs::write(&pseudo, text).with_context(|| format!("writing {}", pseudo.display()))?;
    let root = fixes.iter().find(|f| f.path == "/");
    // Emptied, not removed: in a build the output is an unnamed file
    // (/proc/self/fd/N).
    fs::File::create(&job.image).with_context(|| format!("emptying {}", job.image.display()))?;
    let args = plan::mkfs_args(&job.options, &job.source, &job.image, &pseudo, root);
    // mksquashfs 4.5 refuses SOURCE_DATE_EPOCH next to -mkfs-time and
    // -all-time, which say the same.
    output(
        Command::new("mksquashfs")
            .args(&args)
            .env_remove("SOURCE_DATE_EPOCH"),
        "mksquashfs",
    )?;
    let stat = output(
        Command::new("unsquashfs").arg("-stat").arg(&job.image),
        "unsquashfs -stat (checking the image)",
    )?;
    if !stat.contains("Found a valid SQUASHFS 4:0 superblock") {
        bail!("unsquashfs -stat does not find a squashfs 4.0 superblock:\n{stat}");
    }
    super::erofs::fit(Filesystem::Squashfs, &job.image, job.options.size)
}

/// The device nodes and file capabilities of `job.specials` as pseudo
/// definitions, with the owners and modes of `expected`. Capabilities need
/// mksquashfs ≥ 4.6; older ones are refused, naming the files.
type Caps = Vec<(Name, &'static str, Vec<u8>)>;
fn specials(job: &Job, expected: &[Inode]) -> Result<(Vec<plan::Node>, Caps)> {
    let find = |p: &[u8]| expected.iter().find(|i| i.path.as_bytes() == p);
    let mut nodes = Vec::new();
    for d in &job.specials.devices {
        let i = find(&d.path).context("a staged device node is missing from the tree")?;
        let (major, minor) = split(d.rdev);
        nodes.push(plan::Node {
            path: i.path.clone(),
            mode: i.mode,
            uid: i.uid,
            gid: i.gid,
            major,
            minor,
        });
    }
    if job.specials.caps.is_empty() {
        return Ok((nodes, Vec::new()));
    }
    let version = super::check_tool(Filesystem::Squashfs)?;
    if version < plan::XATTR_PSEUDO {
        let paths = job.specials.caps.iter().take(5);
        return Err(FsError::SquashfsCaps {
            found: format!("{}.{}.{}", version.0, version.1, version.2),
            paths: paths
                .map(|c| job.origin.describe(&Name::from_bytes(c.path.clone())))
                .collect(),
        }
        .into());
    }
    let caps = job.specials.caps.iter().map(|c| {
        let path = Name::from_bytes(c.path.clone());
        (path, "security.capability", c.value.clone())
    });
    Ok((nodes, caps.collect()))
}
