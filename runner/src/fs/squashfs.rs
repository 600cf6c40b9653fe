//! squashfs: `mksquashfs` with the owner fixes as pseudo definitions,
//! then `unsquashfs -stat` to check the superblock; the image is read
//! back by `super::read` (rootbox's squashfs reader, which sees xattrs
//! and inode numbers too).

use std::fs;
use std::process::Command;

use anyhow::{bail, Context, Result};
use rootbox_images::fs::squashfs as plan;
use rootbox_images::fs::{Filesystem, Fix};

use super::{output, Job};

/// Makes the squashfs image of `job`; the fixes go to mksquashfs.
pub fn make(job: &Job, fixes: &[Fix]) -> Result<()> {
    let pseudo = job.scratch.join("squashfs.pseudo");
    let text = plan::pseudo_file(fixes).with_context(|| {
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
