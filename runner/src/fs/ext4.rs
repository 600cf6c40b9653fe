//! ext4: `mkfs.ext4 -d`, `resize2fs -M`, owner fixes with `debugfs -w`,
//! and a reader built on `debugfs` (`ls -p`, `stat`, `ea_get -x`), which
//! needs no root and no mount.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use rootbox_images::fs::ext4::{self as plan, Content, BLOCK};
use rootbox_images::fs::{too_small, Filesystem, Fix};
use rootbox_images::size::Size;

use super::{output, Inode, Job};

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

/// Writes `fixes` (and, for a reproducible build, the clamped times and
/// the xattrs in name order) into the image with one `debugfs -w -f` run.
fn apply_fixes(job: &Job, fixes: &[Fix]) -> Result<()> {
    let listing = list(&job.image)?;
    let by_path: HashMap<&str, &Raw> = listing.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut edits = Vec::new();
    for f in fixes {
        let r = by_path
            .get(f.path.as_str())
            .ok_or_else(|| anyhow!("{} was staged but is not in the ext4 image", f.path))?;
        edits.extend(
            plan::fix_fields(r.uid, r.gid, r.mode, f)
                .into_iter()
                .map(|x| (r.ino, x)),
        );
    }
    let mut script = String::new();
    if let Some(rep) = &job.options.reproducible {
        let mut done = std::collections::HashSet::new();
        let values = xattr_values(&job.image, &listing)?;
        for r in listing.iter().filter(|r| done.insert(r.ino)) {
            edits.extend(
                plan::time_fields(r.times, rep.epoch)
                    .into_iter()
                    .map(|x| (r.ino, x)),
            );
            let names: Vec<&String> = r
                .xattr_names
                .iter()
                .filter(|n| !n.starts_with("system."))
                .collect();
            if names.len() < 2 {
                continue;
            }
            let mut files = Vec::new();
            for (k, name) in names.into_iter().enumerate() {
                let file = job.scratch.join(format!("xattr-{}-{k}", r.ino));
                let value = values
                    .get(&(r.ino, name.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                fs::write(&file, value).with_context(|| format!("writing {}", file.display()))?;
                files.push((name.clone(), file));
            }
            script += &plan::xattr_script(r.ino, &r.path, &files)?;
        }
    }
    script += &plan::debugfs_script(&edits);
    if script.is_empty() {
        return Ok(());
    }
    run_debugfs(&job.image, &script, true, Some(job)).map(|_| ())
}

/// Runs a debugfs command file (with the environment of `job`, if any);
/// its stdout. With `write`, any complaint on stderr fails: debugfs exits
/// 0 after a failed command.
fn run_debugfs(image: &Path, script: &str, write: bool, job: Option<&Job>) -> Result<String> {
    let mut file = tempfile::NamedTempFile::new().context("creating a debugfs command file")?;
    file.write_all(script.as_bytes())
        .context("writing the debugfs command file")?;
    let mut cmd = match job {
        Some(j) => tool("debugfs", j),
        None => {
            let mut c = Command::new("debugfs");
            c.env("DEBUGFS_PAGER", "__none__");
            c
        }
    };
    if write {
        cmd.arg("-w");
    }
    cmd.arg("-f").arg(file.path()).arg(image);
    let out = cmd
        .output()
        .context("running debugfs (is e2fsprogs installed?)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || (write && !complaints.is_empty()) {
        bail!(
            "debugfs {}on {} failed ({}): {}",
            if write { "-w " } else { "" },
            image.display(),
            out.status,
            complaints.join("; ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An inode as `debugfs ls -p` and `stat` show it.
#[derive(Debug, Clone)]
struct Raw {
    path: String,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    /// atime, mtime, ctime, crtime: seconds, nanoseconds.
    times: [(i64, u32); 4],
    rdev: Option<(u32, u32)>,
    target: Option<String>,
    xattr_names: Vec<String>,
}

/// The outputs of a command file, one per `debugfs: CMD` echo line.
fn sections(stdout: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(cmd) = line.strip_prefix("debugfs: ") {
            out.push((cmd, Vec::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(line);
        }
    }
    out
}

/// Every path of the image with its inode, breadth first by directory.
fn list(image: &Path) -> Result<Vec<Raw>> {
    let mut all = vec![(2u64, "/".to_string(), 0o040000u32, 0u32, 0u32)];
    let mut pending = vec![(2u64, "/".to_string())];
    while !pending.is_empty() {
        let script: String = pending
            .iter()
            .map(|(ino, _)| format!("ls -p <{ino}>\n"))
            .collect();
        let out = run_debugfs(image, &script, false, None)?;
        let secs = sections(&out);
        if secs.len() != pending.len() {
            bail!(
                "debugfs listed {} of {} directories",
                secs.len(),
                pending.len()
            );
        }
        let mut next = Vec::new();
        for ((_, dir), (_, lines)) in pending.iter().zip(secs) {
            for l in lines.iter().filter(|l| !l.is_empty()) {
                // /INO/MODE/UID/GID/NAME/SIZE/ (a name has no '/')
                let f: Vec<&str> = l.split('/').collect();
                if f.len() != 8 || !f[0].is_empty() {
                    bail!("unexpected debugfs ls -p line in {dir}: {l:?}");
                }
                let name = f[5];
                // lost+found's preallocated blocks list as empty entries.
                if name == "." || name == ".." || (name.is_empty() && f[1] == "0") {
                    continue;
                }
                let num = |s: &str, radix| {
                    u64::from_str_radix(s, radix)
                        .with_context(|| format!("debugfs ls -p line {l:?}"))
                };
                let ino = num(f[1], 10)?;
                let mode = num(f[2], 8)? as u32;
                let path = rootbox_images::fs::join(dir, name);
                all.push((
                    ino,
                    path.clone(),
                    mode,
                    num(f[3], 10)? as u32,
                    num(f[4], 10)? as u32,
                ));
                if mode & super::S_IFMT == 0o040000 {
                    next.push((ino, path));
                }
            }
        }
        pending = next;
    }
    // One stat per inode.
    let mut inos: Vec<u64> = all.iter().map(|a| a.0).collect();
    inos.sort_unstable();
    inos.dedup();
    let script: String = inos.iter().map(|i| format!("stat <{i}>\n")).collect();
    let out = run_debugfs(image, &script, false, None)?;
    let mut stats = HashMap::new();
    for (cmd, lines) in sections(&out) {
        let ino: u64 = cmd
            .trim_start_matches("stat <")
            .trim_end_matches('>')
            .parse()
            .with_context(|| format!("debugfs echoed {cmd:?}"))?;
        stats.insert(
            ino,
            parse_stat(&lines).with_context(|| format!("debugfs stat <{ino}>"))?,
        );
    }
    all.into_iter()
        .map(|(ino, path, _, _, _)| {
            let s = stats
                .get(&ino)
                .ok_or_else(|| anyhow!("debugfs printed no stat for inode {ino} ({path})"))?;
            Ok(Raw {
                path,
                ino,
                ..s.clone()
            })
        })
        .collect()
}

fn parse_stat(lines: &[&str]) -> Result<Raw> {
    let mut r = Raw {
        path: String::new(),
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        times: [(0, 0); 4],
        rdev: None,
        target: None,
        xattr_names: Vec::new(),
    };
    let mut in_xattrs = false;
    let word_after = |l: &str, key: &str| -> Option<String> {
        let rest = &l[l.find(key)? + key.len()..];
        rest.split_whitespace().next().map(str::to_string)
    };
    for l in lines {
        if l.starts_with("Inode:") {
            let t = l.find("Type:").map(|i| &l[i + 5..]).unwrap_or("");
            let kind = t.split("Mode:").next().unwrap_or("").trim();
            let m = word_after(l, "Mode:").context("no Mode")?;
            r.mode = u32::from_str_radix(&m, 8).with_context(|| format!("mode {m:?}"))?;
            r.mode |= match kind {
                "regular" => 0o100000,
                "directory" => 0o040000,
                "symlink" => 0o120000,
                "character special" => 0o020000,
                "block special" => 0o060000,
                "FIFO" => 0o010000,
                "socket" => 0o140000,
                other => bail!("unknown inode type {other:?}"),
            };
        } else if l.starts_with("User:") {
            r.uid = word_after(l, "User:").context("no User")?.parse()?;
            r.gid = word_after(l, "Group:").context("no Group")?.parse()?;
        } else if let Some((which, rest)) = ["atime:", "mtime:", "ctime:", "crtime:"]
            .iter()
            .enumerate()
            .find_map(|(i, k)| l.trim_start().strip_prefix(k).map(|r| (i, r)))
        {
            // 0xSECONDS:EXTRA -- ...; EXTRA = nanoseconds << 2 | epoch bits.
            let v = rest.split_whitespace().next().unwrap_or("");
            let (s, e) = v.trim_start_matches("0x").split_once(':').context("time")?;
            let (s, e) = (i64::from_str_radix(s, 16)?, u32::from_str_radix(e, 16)?);
            r.times[which] = (s + (i64::from(e & 3) << 32), e >> 2);
        } else if l.starts_with("Extended attributes:") {
            in_xattrs = true;
            continue;
        } else if let Some(rest) = l.strip_prefix("Device major/minor number:") {
            let v = rest.split_whitespace().next().unwrap_or("");
            let (a, b) = v.split_once(':').context("device number")?;
            r.rdev = Some((a.parse()?, b.parse()?));
        } else if let Some(rest) = l.strip_prefix("Fast link dest: ") {
            r.target = Some(unquote(rest.trim()).context("fast link target")?);
        }
        if in_xattrs {
            match l.strip_prefix("  ") {
                Some(x) => {
                    let name = x.split(" (").next().unwrap_or("").to_string();
                    r.xattr_names.push(name);
                }
                None => in_xattrs = false,
            }
        }
    }
    if r.mode == 0 {
        bail!("no Inode line");
    }
    Ok(r)
}

/// A `"…"` string of debugfs (non-printable bytes as `\ooo`).
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let b = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The values of the (non-`system.`) xattrs of `raws`, by inode and name,
/// from `ea_get -x` (stat leaves out long ones).
fn xattr_values(image: &Path, raws: &[Raw]) -> Result<HashMap<(u64, String), Vec<u8>>> {
    let mut wanted: Vec<(u64, String)> = raws
        .iter()
        .flat_map(|r| {
            r.xattr_names
                .iter()
                .filter(|n| !n.starts_with("system."))
                .map(|n| (r.ino, n.clone()))
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut values = HashMap::new();
    if wanted.is_empty() {
        return Ok(values);
    }
    let script: String = wanted
        .iter()
        .map(|(ino, n)| format!("ea_get -x <{ino}> {n}\n"))
        .collect();
    let out = run_debugfs(image, &script, false, None)?;
    for ((ino, name), (_, lines)) in wanted.iter().zip(sections(&out)) {
        let line = lines
            .iter()
            .find(|l| l.starts_with(name.as_str()))
            .ok_or_else(|| anyhow!("debugfs printed no value of {name} of inode {ino}"))?;
        let hex = line.split_once(" = ").map(|x| x.1).unwrap_or("");
        let v = hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<Vec<u8>, _>>()
            .with_context(|| format!("xattr {name} of inode {ino}: {line:?}"))?;
        values.insert((*ino, name.clone()), v);
    }
    Ok(values)
}

/// Reads every inode of an ext4 image with debugfs.
pub fn read(image: &Path) -> Result<Vec<Inode>> {
    let raws = list(image)?;
    let values = xattr_values(image, &raws)?;
    Ok(raws
        .into_iter()
        .map(|r| {
            let xattrs: BTreeMap<String, Vec<u8>> = r
                .xattr_names
                .iter()
                .filter(|n| !n.starts_with("system."))
                .filter_map(|n| Some((n.clone(), values.get(&(r.ino, n.clone()))?.clone())))
                .collect();
            Inode {
                path: r.path,
                ino: Some(r.ino),
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
                rdev: r.rdev,
                target: r.target,
                xattrs: Some(xattrs),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_of_debugfs_1_47_parses() {
        let text = "Inode: 14   Type: character special    Mode:  0644   Flags: 0x0
Generation: 0    Version: 0x00000000:00000000
User:  1000   Group:   100   Project:     0   Size: 0
Links: 1   Blockcount: 0
 ctime: 0x6b0f4cfa:00000004 -- Tue Dec  1 22:40:58 2026
 atime: 0x000003e8:00000000 -- Thu Jan  1 00:16:40 1970
 mtime: 0x000003e8:00000008 -- Thu Jan  1 00:16:40 1970
crtime: 0x000003e8:00000000 -- Thu Jan  1 00:16:40 1970
Extended attributes:
  user.x (1) = \"1\"
  security.capability (20) = 01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00 
Inode checksum: 0xec6788fb
Device major/minor number: 259:03 (hex 103:03)";
        let lines: Vec<&str> = text.lines().collect();
        let r = parse_stat(&lines).unwrap();
        assert_eq!(r.mode, 0o020644);
        assert_eq!((r.uid, r.gid), (1000, 100));
        assert_eq!(r.rdev, Some((259, 3)));
        assert_eq!(r.times[1], (1000, 2));
        assert_eq!(r.times[2], (0x6b0f4cfa, 1));
        assert_eq!(r.xattr_names, ["user.x", "security.capability"]);
        assert_eq!(unquote("\"a\\001b\"").as_deref(), Some("a\u{1}b"));
    }
}
