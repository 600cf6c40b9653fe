//! squashfs: `mksquashfs` with the owner fixes as pseudo definitions, and
//! a reader built on `unsquashfs -lln` (numeric owners, modes, device
//! numbers, symlink targets; squashfs-tools 4.5 lists no xattrs and no
//! inode numbers, so the reader reports neither).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use rootbox_images::fs::squashfs as plan;
use rootbox_images::fs::{Filesystem, Fix};

use super::{output, Inode, Job};

/// Makes the squashfs image of `job`; the fixes go to mksquashfs.
pub fn make(job: &Job, fixes: &[Fix]) -> Result<()> {
    let pseudo = job.scratch.join("squashfs.pseudo");
    fs::write(&pseudo, plan::pseudo_file(fixes)?)
        .with_context(|| format!("writing {}", pseudo.display()))?;
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

/// Reads every inode of a squashfs image with `unsquashfs -lln`.
pub fn read(image: &Path) -> Result<Vec<Inode>> {
    let out = output(
        Command::new("unsquashfs")
            .args(["-lln", "-d", ""])
            .arg(image),
        "unsquashfs -lln",
    )?;
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_line(l).with_context(|| format!("unsquashfs -lln line {l:?}")))
        .collect()
}

/// The next space-separated word of `s`, and the rest after one space.
fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    let end = s.find(' ').unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], s.get(end + 1..).unwrap_or("")))
}

/// `MODE UID/GID SIZE|MAJOR, MINOR DATE TIME NAME[ -> TARGET]`.
fn parse_line(l: &str) -> Result<Inode> {
    let (mode_s, rest) = word(l).context("no mode")?;
    let (owner, rest) = word(rest).context("no owner")?;
    let (size, mut rest) = word(rest).context("no size")?;
    let mut rdev = None;
    let mut len: usize = 0;
    if let Some(major) = size.strip_suffix(',') {
        let (minor, r) = word(rest).context("no minor")?;
        rdev = Some((major.parse()?, minor.parse()?));
        rest = r;
    } else {
        len = size.parse()?;
    }
    let (_date, rest) = word(rest).context("no date")?;
    let (_time, name) = word(rest).context("no time")?;
    let mode = parse_mode(mode_s)?;
    let (uid, gid) = owner.split_once('/').context("owner is not UID/GID")?;
    let (path, target) = if super::is_symlink(mode) {
        // The target is the last SIZE bytes, after " -> ".
        let cut = name
            .len()
            .checked_sub(len + 4)
            .context("a short symlink line")?;
        (&name[..cut], Some(name[cut + 4..].to_string()))
    } else {
        (name, None)
    };
    Ok(Inode {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        ino: None,
        mode,
        uid: uid.parse()?,
        gid: gid.parse()?,
        rdev,
        target,
        xattrs: None,
    })
}

/// `drwsr-xr-t` and the like, as `st_mode`.
fn parse_mode(s: &str) -> Result<u32> {
    let b = s.as_bytes();
    if b.len() != 10 {
        bail!("mode {s:?} is not 10 characters");
    }
    let kind = match b[0] {
        b'-' => 0o100000,
        b'd' => 0o040000,
        b'l' => 0o120000,
        b'c' => 0o020000,
        b'b' => 0o060000,
        b'p' => 0o010000,
        b's' => 0o140000,
        c => bail!("file type {:?} in mode {s:?}", c as char),
    };
    let mut m = kind;
    for (i, &c) in b[1..].iter().enumerate() {
        let bit = 1 << (8 - i);
        let (special, lower) = match i {
            2 => (0o4000, b's'),
            5 => (0o2000, b's'),
            8 => (0o1000, b't'),
            _ => (0, 0),
        };
        match c {
            b'-' => {}
            b'r' | b'w' | b'x' => m |= bit,
            c if special != 0 && c == lower => m |= bit | special,
            c if special != 0 && c == lower.to_ascii_uppercase() => m |= special,
            c => bail!("{:?} in mode {s:?}", c as char),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_unsquashfs_4_5_parse() {
        let i =
            parse_line("-rwsr-sr-x 7/8                       2 1970-01-01 00:16 /a b/f").unwrap();
        assert_eq!(
            (i.path.as_str(), i.mode, i.uid, i.gid),
            ("/a b/f", 0o106755, 7, 8)
        );
        let i = parse_line("brw-r--r-- 0/0                 259,  3 2026-12-01 22:49 /blk").unwrap();
        assert_eq!(i.rdev, Some((259, 3)));
        let i = parse_line("lrwxrwxrwx 0/0                       6 2026-12-01 22:49 /l -> x -> y")
            .unwrap();
        assert_eq!(
            (i.path.as_str(), i.target.as_deref()),
            ("/l", Some("x -> y"))
        );
        let i = parse_line("drwxrwxrwT 0/0                      35 2026-12-01 22:49 ").unwrap();
        assert_eq!((i.path.as_str(), i.mode), ("/", 0o041776));
    }
}
