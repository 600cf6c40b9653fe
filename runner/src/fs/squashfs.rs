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

use rootbox_images::fs::Name;

use super::{output, output_bytes, Inode, Job};

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

/// Reads every inode of a squashfs image with `unsquashfs -lln`, whose
/// names and targets are printed as they are (any byte, a newline too).
pub fn read(image: &Path) -> Result<Vec<Inode>> {
    let out = output_bytes(
        Command::new("unsquashfs")
            .args(["-lln", "-d", ""])
            .arg(image),
        "unsquashfs -lln",
    )?;
    records(&out)
        .into_iter()
        .map(|r| {
            parse_line(&r)
                .with_context(|| format!("unsquashfs -lln line {:?}", String::from_utf8_lossy(&r)))
        })
        .collect()
}

/// The entries of `unsquashfs -lln`: one a line, but a name or a target
/// holding a newline goes on over the next lines, which then do not start
/// as an entry does (`MODE UID/GID `); those are joined back.
fn records(out: &[u8]) -> Vec<Vec<u8>> {
    let mut records: Vec<Vec<u8>> = Vec::new();
    // The last entry's newline ends it; one inside a name does not.
    let out = out.strip_suffix(b"\n").unwrap_or(out);
    for line in out.split(|&c| c == b'\n') {
        match records.last_mut() {
            Some(last) if !starts_an_entry(line) => {
                last.push(b'\n');
                last.extend_from_slice(line);
            }
            _ if line.is_empty() => {}
            _ => records.push(line.to_vec()),
        }
    }
    records
}

/// `drwxr-xr-x 0/0 ` and the like.
fn starts_an_entry(line: &[u8]) -> bool {
    let Some((mode, rest)) = word(line) else {
        return false;
    };
    let Some((owner, _)) = word(rest) else {
        return false;
    };
    let numeric = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    parse_mode(&String::from_utf8_lossy(mode)).is_ok()
        && owner
            .split(|&c| c == b'/')
            .collect::<Vec<_>>()
            .as_slice()
            .iter()
            .all(|p| numeric(p))
        && owner.contains(&b'/')
}

/// The next space-separated word of `s`, and the rest after one space.
fn word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = s.iter().position(|&c| c != b' ')?;
    let s = &s[start..];
    let end = s.iter().position(|&c| c == b' ').unwrap_or(s.len());
    Some((&s[..end], s.get(end + 1..).unwrap_or(&[])))
}

/// `MODE UID/GID SIZE|MAJOR, MINOR DATE TIME NAME[ -> TARGET]`.
fn parse_line(l: &[u8]) -> Result<Inode> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (mode_s, rest) = word(l).context("no mode")?;
    let (owner, rest) = word(rest).context("no owner")?;
    let (size, mut rest) = word(rest).context("no size")?;
    let mut rdev = None;
    let mut len: usize = 0;
    if let Some(major) = size.strip_suffix(b",") {
        let (minor, r) = word(rest).context("no minor")?;
        rdev = Some((text(major).parse()?, text(minor).parse()?));
        rest = r;
    } else {
        len = text(size).parse()?;
    }
    let (_date, rest) = word(rest).context("no date")?;
    let (_time, name) = word(rest).unwrap_or((b"", b""));
    let mode = parse_mode(&text(mode_s))?;
    let owner = text(owner);
    let (uid, gid) = owner.split_once('/').context("owner is not UID/GID")?;
    let (path, target) = if super::is_symlink(mode) {
        // The target is the last SIZE bytes, after " -> ".
        let cut = name
            .len()
            .checked_sub(len + 4)
            .context("a short symlink line")?;
        (&name[..cut], Some(Name::from_bytes(&name[cut + 4..])))
    } else {
        (name, None)
    };
    Ok(Inode {
        path: if path.is_empty() {
            Name::root()
        } else {
            Name::from_bytes(path)
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
            parse_line(b"-rwsr-sr-x 7/8                       2 1970-01-01 00:16 /a b/f").unwrap();
        assert_eq!(
            (i.path.escaped().as_str(), i.mode, i.uid, i.gid),
            ("/a b/f", 0o106755, 7, 8)
        );
        let i =
            parse_line(b"brw-r--r-- 0/0                 259,  3 2026-12-01 22:49 /blk").unwrap();
        assert_eq!(i.rdev, Some((259, 3)));
        let i = parse_line(b"lrwxrwxrwx 0/0                       6 2026-12-01 22:49 /l -> x -> y")
            .unwrap();
        assert_eq!(
            (i.path.escaped(), i.target.map(|t| t.escaped())),
            ("/l".to_string(), Some("x -> y".to_string()))
        );
        let i = parse_line(b"drwxrwxrwT 0/0                      35 2026-12-01 22:49 ").unwrap();
        assert_eq!((i.path.escaped().as_str(), i.mode), ("/", 0o041776));
    }

    #[test]
    fn names_and_targets_with_newlines_and_other_bytes_are_joined_back() {
        let out = b"drwxr-xr-x 0/0                      35 2026-12-01 22:49 \n\
-rw-r--r-- 0/0                       2 2026-12-01 22:49 /srv/caf\xe9\n\
-rw-r--r-- 0/0                       2 2026-12-01 22:49 /srv/new\n\
line\n\
lrwxrwxrwx 0/0                       7 2026-12-01 22:49 /srv/l -> a\\b\n\
c:d\n";
        let got: Vec<(Vec<u8>, Option<Vec<u8>>)> = records(out)
            .iter()
            .map(|r| parse_line(r).unwrap())
            .map(|i| {
                (
                    i.path.as_bytes().to_vec(),
                    i.target.map(|t| t.as_bytes().to_vec()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (b"/".to_vec(), None),
                (b"/srv/caf\xe9".to_vec(), None),
                (b"/srv/new\nline".to_vec(), None),
                (b"/srv/l".to_vec(), Some(b"a\\b\nc:d".to_vec())),
            ]
        );
    }
}
