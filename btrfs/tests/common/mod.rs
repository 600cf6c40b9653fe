//! Helpers shared by the btrfs integration tests (reader, rewrite,
//! reproducible images): running tools, root checks, mkfs.btrfs, mounts.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

// The skip shared with rootbox's own tests: fails under CI.
#[path = "../../../tests/common/skip.rs"]
pub mod skip;
pub mod sparse_image;

pub use skip::skipped;

/// Returns from the test when mkfs.btrfs is missing or too old for
/// `--rootdir --subvol` (a skip: under CI, which has it, a failure).
#[macro_export]
macro_rules! require_mkfs {
    () => {
        if let Err(why) = $crate::common::mkfs_usable() {
            $crate::common::skipped(format_args!("{why}"));
            return;
        }
    };
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The part of a test that needs root is left out (a skip: under CI,
/// which runs as root, a failure).
#[track_caller]
pub fn skip_note(what: &str) {
    skipped(format_args!("not root: {what} left out"));
}

/// Run a command, panic with its stderr on failure, return its stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `Ok` when mkfs.btrfs is 6.12 or newer (`--subvol TYPE:DIR`).
pub fn mkfs_usable() -> Result<(), String> {
    let out = std::process::Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .map_err(|e| format!("mkfs.btrfs not runnable: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .ok_or_else(|| format!("no version in {text:?}"))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 12) {
        return Err(format!("mkfs.btrfs {version} is older than 6.12"));
    }
    Ok(())
}

/// Mounts an image read-only on a temporary directory until dropped.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(img: &Path, options: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        run(std::process::Command::new("mount")
            .args(["-t", "btrfs", "-o", &format!("loop,ro,{options}")])
            .arg(img)
            .arg(dir.path()));
        Mount { dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// `btrfs check --readonly` of `img` finds nothing wrong: it succeeds,
/// says "no error found" and prints no ERROR line.
pub fn assert_check_clean(img: &Path) {
    let out = std::process::Command::new("btrfs")
        .args(["check", "--readonly"])
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "btrfs check {} failed:\n{text}",
        img.display()
    );
    assert!(
        !text.contains("ERROR") && text.contains("no error found"),
        "btrfs check {}:\n{text}",
        img.display()
    );
}
