//! Mounts: the mount table ([`mount_table`], [`MountEntry`]) and what
//! changed in it ([`mount_diff`]), and the mounts tests make themselves,
//! each undone when its guard is dropped, also when the test panics
//! ([`SharedMount`], [`Mounted`], [`Unmount`], [`mount_tmpfs_for`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cmd::{run, s};
use super::fixture::create_dirs_as;
use super::user::{cmd_as, is_root, User};

/// One line of /proc/PID/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub dev: String,
    pub root: String,
    pub mount_point: String,
    pub options: String,
    /// Propagation fields (`shared:N`, `master:N`, ...).
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
    /// The line as read.
    pub line: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut f = pre.split(' ');
            let id = f.next()?.parse().ok()?;
            let parent = f.next()?.parse().ok()?;
            let dev = f.next()?.to_string();
            let root = unescape(f.next()?);
            let mount_point = unescape(f.next()?);
            let options = f.next()?.to_string();
            let optional = f.map(str::to_string).collect();
            let mut g = post.splitn(3, ' ');
            Some(MountEntry {
                id,
                parent,
                dev,
                root,
                mount_point,
                options,
                optional,
                fstype: g.next()?.to_string(),
                source: unescape(g.next()?),
                super_options: g.next().unwrap_or("").to_string(),
                line: line.to_string(),
            })
        })
        .collect()
}

/// The mount table of this process.
pub fn mount_table() -> Vec<MountEntry> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo"))
}

/// The mount table as a separate process outside any sandbox sees it
/// (`cat /proc/self/mountinfo`, run as the test user).
pub fn mount_table_of_new_process(user: &User) -> Vec<MountEntry> {
    let out = run(cmd_as(user, "cat").arg("/proc/self/mountinfo"));
    out.assert_success();
    parse_mountinfo(&out.stdout)
}

/// The mounts at or below `path`.
pub fn mounts_below<'a>(table: &'a [MountEntry], path: &Path) -> Vec<&'a MountEntry> {
    table
        .iter()
        .filter(|m| Path::new(&m.mount_point).starts_with(path))
        .collect()
}

/// Lines only in `before` (`-`) or only in `after` (`+`); empty when equal.
pub fn mount_diff(before: &[MountEntry], after: &[MountEntry]) -> String {
    let mut d = String::new();
    for m in before.iter().filter(|m| !after.contains(m)) {
        d += &format!("- {}\n", m.line);
    }
    for m in after.iter().filter(|m| !before.contains(m)) {
        d += &format!("+ {}\n", m.line);
    }
    d
}

/// Makes `dir` a shared mount point (a bind onto itself) for as long as the
/// guard lives, so that a mount made below it in a namespace that failed
/// to stop propagation would appear on the host. Root only.
pub struct SharedMount(PathBuf);

impl SharedMount {
    pub fn new(dir: &Path) -> SharedMount {
        use nix::mount::{mount, MsFlags};
        assert!(is_root(), "SharedMount needs root");
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap_or_else(|e| panic!("bind {} onto itself: {e}", dir.display()));
        let guard = SharedMount(dir.to_path_buf());
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("making {} shared: {e}", dir.display()));
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts a tmpfs of `size` on `at` (created), owned by `user`, mode 0755.
/// Root only; the caller unmounts it.
pub fn mount_tmpfs_for(user: &User, at: &Path, size: &str) {
    create_dirs_as(user, at);
    let opts = format!("size={size},mode=0755,uid={},gid={}", user.uid, user.gid);
    nix::mount::mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", at.display()));
}

/// An image loop-mounted read-only (root only); unmounted when dropped,
/// also when the test panics.
pub struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    /// Mounts `subvol` of `image` (`None`: the top level, subvolid=5).
    pub fn new(image: &Path, subvol: Option<&str>) -> Mounted {
        assert!(is_root(), "mounting needs root");
        let dir = tempfile::Builder::new()
            .prefix("rootbox-test-mnt-")
            .tempdir_in("/tmp")
            .expect("a mount point");
        let opt = match subvol {
            Some(n) => format!("loop,ro,subvol={n}"),
            None => "loop,ro,subvolid=5".to_string(),
        };
        run(Command::new("mount").args(["-o", &opt, s(image), s(dir.path())])).assert_success();
        Mounted { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Unmounts a test mount when dropped.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
