//! The harness shared by the integration tests (tests/run.rs, tests/build.rs).
//!
//! rootbox is a rootless tool, so its tests must run without privileges.
//! CI runs them as root; every test then drops to an unprivileged user
//! first ([`unprivileged`], [`cmd_as`]) and checks that the drop happened
//! ([`assert_unprivileged`]). Run as a normal user, the tests use that user.
//!
//! Also here: a copy of the rootbox binary any user can execute
//! ([`rootbox_bin`]), temporary directories owned by the test user
//! ([`tempdir_for`]), commands with a time limit and readable failures
//! ([`run`], [`Out`]), the host's mount table ([`mount_table`]),
//! processes by their arguments ([`pids_with_args`]), polling
//! ([`wait_until`]) and a host-tools root filesystem ([`HOST_USR`]).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The user the tests run their commands as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Name of the unprivileged test user when the tests run as root.
pub const DEFAULT_TEST_USER: &str = "rootbox-test";
/// The subordinate range the harness gives the test user it creates (the
/// same as CI's scripts/test).
pub const TEST_SUBID_RANGE: (u32, u32) = (200_000, 65_536);

/// Prints why a test does nothing here and returns from it.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("SKIPPED: {}", format_args!($($arg)*));
        return;
    }};
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The unprivileged user the tests run as: when running as root, the user
/// named by `ROOTBOX_TEST_USER` (default `rootbox-test`, created with a
/// subordinate range if missing); otherwise the current user. `None` when
/// there is no such user and it cannot be created.
pub fn unprivileged() -> Option<User> {
    static USER: OnceLock<Option<User>> = OnceLock::new();
    USER.get_or_init(find_or_create_user).clone()
}

/// [`unprivileged`], or a panic saying why there is none.
pub fn test_user() -> User {
    unprivileged().unwrap_or_else(|| {
        panic!(
            "no unprivileged user to run the tests as: running as root, and user {:?} \
             neither exists nor could be created (set ROOTBOX_TEST_USER to an existing user)",
            test_user_name()
        )
    })
}

fn test_user_name() -> String {
    std::env::var("ROOTBOX_TEST_USER").unwrap_or_else(|_| DEFAULT_TEST_USER.to_string())
}

fn user_from(u: nix::unistd::User) -> User {
    User {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    }
}

fn find_or_create_user() -> Option<User> {
    if !is_root() {
        let uid = nix::unistd::getuid();
        return Some(match nix::unistd::User::from_uid(uid).ok().flatten() {
            Some(u) => user_from(u),
            None => User {
                name: uid.to_string(),
                uid: uid.as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                home: std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "/".into()),
            },
        });
    }
    let name = test_user_name();
    let lookup = || nix::unistd::User::from_name(&name).ok().flatten();
    if let Some(u) = lookup() {
        return Some(user_from(u)).filter(|u| u.uid != 0);
    }
    // Test binaries run one after another, but tests within one run in
    // parallel threads (the OnceLock serialises those): the file lock
    // keeps two test processes from both running useradd.
    let lock_path = if Path::new("/run/lock").is_dir() {
        "/run/lock/rootbox-test-user.lock"
    } else {
        "/tmp/rootbox-test-user.lock"
    };
    let lock = fs::File::create(lock_path).ok()?;
    lock.lock().ok()?;
    if lookup().is_none() {
        let (start, count) = TEST_SUBID_RANGE;
        let range = format!("{start}-{}", start + count - 1);
        // SUB_*_COUNT=0: no automatic range from login.defs, only ours.
        let created = Command::new("useradd")
            .args([
                "-m",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
                &name,
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !created {
            eprintln!("harness: useradd -m {name} failed");
            return None;
        }
        let ranged = Command::new("usermod")
            .args(["--add-subuids", &range, "--add-subgids", &range, &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ranged {
            eprintln!("harness: usermod --add-subuids {range} {name} failed");
        }
    }
    let _ = lock.unlock();
    lookup().map(user_from).filter(|u| u.uid != 0)
}

/// A command that runs `program` as `user`: when the tests run as root it
/// drops to the user (setgroups([]), setgid, setuid: std does exactly this
/// for `uid`/`gid`, between fork and exec) and sets HOME, USER and LOGNAME.
/// Starts in `/`, which every user can enter.
pub fn cmd_as(user: &User, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    if is_root() {
        cmd.gid(user.gid).uid(user.uid);
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    cmd.current_dir("/");
    cmd
}

/// The fields of a `/proc/PID/status` text, by name.
pub fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Asserts that a process started with [`cmd_as`] runs as `user` with no
/// capabilities: call it at the start of every rootless test.
pub fn assert_unprivileged(user: &User) {
    assert_ne!(user.uid, 0, "the test user must not be root: {user:?}");
    let out = run(cmd_as(user, "cat").arg("/proc/self/status"));
    out.assert_success();
    let status = &out.stdout;
    let field = |f: &str| {
        status_field(status, f).unwrap_or_else(|| panic!("no {f} in /proc/self/status:\n{status}"))
    };
    let uid = user.uid.to_string();
    for (f, want) in [("Uid", &uid), ("Gid", &user.gid.to_string())] {
        let ids: Vec<&str> = field(f).split_whitespace().collect();
        assert!(
            ids.len() == 4 && ids.iter().all(|i| i == want),
            "{f} of a dropped process is {ids:?}, want {want} everywhere"
        );
    }
    if is_root() {
        assert!(
            field("Groups").split_whitespace().all(|g| g != "0"),
            "a dropped process kept group 0: Groups {}",
            field("Groups")
        );
    }
    for cap in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(
            field(cap),
            "0000000000000000",
            "{cap} of a process dropped to {} is not empty",
            user.name
        );
    }
}

/// The rootbox binary, linked or copied once into a fresh directory under
/// /tmp (mode 0755) so that the test user can run it wherever cargo built
/// it (CI may build below /root). Directories left by earlier test
/// processes that are gone are removed.
pub fn rootbox_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        remove_stale_bin_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("rootbox-test-bin-{}-", std::process::id()))
            .tempdir_in("/tmp")
            .expect("creating a directory for the rootbox binary")
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        let bin = dir.join("rootbox");
        let built = Path::new(env!("CARGO_BIN_EXE_rootbox"));
        // A hard link where the file systems allow it (no 60 MB copy per
        // run); it shares the built file's mode, which must let others run it.
        let linked = fs::hard_link(built, &bin).is_ok()
            && fs::metadata(&bin).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
        if !linked {
            let _ = fs::remove_file(&bin);
            fs::copy(built, &bin).expect("copying the rootbox binary");
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        }
        bin
    })
    .clone()
}

fn remove_stale_bin_dirs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("rootbox-test-bin-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = fs::symlink_metadata(e.path())
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == me)
            .unwrap_or(false);
        if mine && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// `rootbox` as the test user.
pub fn rootbox(user: &User) -> Command {
    cmd_as(user, rootbox_bin())
}

/// `chown user: path` (not following a symlink at `path`); a no-op when not root.
pub fn give_to(user: &User, path: &Path) {
    if is_root() {
        lchown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// `chown -R user: path`, not following symlinks.
pub fn give_tree_to(user: &User, path: &Path) {
    give_to(user, path);
    let meta = fs::symlink_metadata(path).expect("lstat");
    if meta.is_dir() {
        for e in fs::read_dir(path).expect("read_dir").flatten() {
            give_tree_to(user, &e.path());
        }
    }
}

/// A temporary directory under /tmp owned by `user`, removed on drop.
pub fn tempdir_for(user: &User) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rootbox-test-")
        .tempdir_in("/tmp")
        .expect("creating a temporary directory");
    give_to(user, dir.path());
    dir
}

/// Writes `contents` to `path` (creating parents) and gives all of it to `user`.
pub fn write_as(user: &User, path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        create_dirs_as(user, parent);
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    give_to(user, path);
}

/// `mkdir -p path`, every directory it creates owned by `user`.
pub fn create_dirs_as(user: &User, path: &Path) {
    if path.is_dir() {
        return;
    }
    if let Some(parent) = path.parent() {
        create_dirs_as(user, parent);
    }
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    give_to(user, path);
}

/// `ln -s target link`, owned by `user`.
pub fn symlink_as(user: &User, target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target.as_ref(), link).unwrap_or_else(|e| {
        panic!(
            "ln -s {} {}: {e}",
            target.as_ref().display(),
            link.display()
        )
    });
    give_to(user, link);
}

/// Makes `dir` a root filesystem that borrows the host's tools: the host's
/// top-level usr-merge symlinks (bin -> usr/bin, ...) are copied, so the
/// sandbox needs only [`HOST_USR`]'s read-only bind of /usr.
pub fn host_tools_rootfs(user: &User, dir: &Path) {
    create_dirs_as(user, dir);
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::read_link(&host) {
            Ok(target) => symlink_as(user, target, &dir.join(top)),
            Err(_) if host.is_dir() => panic!(
                "/{top} is a directory, not a usr-merge symlink: host_tools_rootfs needs a merged /usr"
            ),
            Err(_) => {}
        }
    }
}

/// The rootbox arguments that complete a [`host_tools_rootfs`].
pub const HOST_USR: [&str; 3] = ["--ro-bind", "/usr", "/usr"];

// ---- running commands ----------------------------------------------------

/// How long a command of a test may take before the harness kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command did, shown in full in every failure message.
pub struct Out {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` ended with {}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// The exit code, or None when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "command failed:\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "want exit code {code}:\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}:\n{self}"
        );
        self
    }

    /// Standard output without surrounding white space.
    pub fn trimmed(&self) -> &str {
        self.stdout.trim()
    }
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$&;|<>*".contains(c)) {
                format!("'{}'", s.replace('\'', r"'\''"))
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to its end (stdin closed), killing it after
/// [`COMMAND_TIMEOUT`].
#[track_caller]
pub fn run(cmd: &mut Command) -> Out {
    start(cmd).finish()
}

/// A command started by [`start`], its output collected in the background.
pub struct Running {
    what: String,
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

/// Starts `cmd` with stdin closed and stdout/stderr collected.
#[track_caller]
pub fn start(cmd: &mut Command) -> Running {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    }
    let stdout = reader(child.stdout.take().expect("stdout"));
    let stderr = reader(child.stderr.take().expect("stderr"));
    Running {
        what,
        child,
        stdout,
        stderr,
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.pid()));
    }

    /// Whether it has not ended yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the end, at most [`COMMAND_TIMEOUT`].
    #[track_caller]
    pub fn finish(self) -> Out {
        self.finish_within(COMMAND_TIMEOUT)
    }

    /// Waits for the end, at most `limit`; kills it and panics after that.
    #[track_caller]
    pub fn finish_within(mut self, limit: Duration) -> Out {
        let deadline = Instant::now() + limit;
        let (status, timed_out) = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for a command") {
                break (s, false);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break (
                    self.child.wait().expect("waiting for a killed command"),
                    true,
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // A descendant that outlived the command (the bug some tests look
        // for) may hold the pipes open: do not wait for it forever.
        let collect = |h: std::thread::JoinHandle<String>| {
            if wait_until(Duration::from_secs(5), || h.is_finished()) {
                h.join().unwrap_or_default()
            } else {
                "<pipe still open: a descendant of the command outlived it>\n".to_string()
            }
        };
        let out = Out {
            what: self.what,
            status,
            stdout: collect(self.stdout),
            stderr: collect(self.stderr),
        };
        if timed_out {
            panic!("command did not end within {limit:?}, killed it:\n{out}");
        }
        out
    }
}

/// The signal that ended a process, if one did.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- processes -------------------------------------------------------------

/// The arguments of process `pid` (empty for kernel threads and zombies).
pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (not zombie) processes whose arguments satisfy `pred`.
pub fn pids_with_args(pred: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            let args = cmdline(pid);
            !args.is_empty() && pred(&args) && !is_zombie(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

/// A string no other process carries: `prefix` with this process's pid
/// and a counter. `unique_marker("1000.")` is also a valid `sleep` time.
pub fn unique_marker(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{:04}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---- mounts ----------------------------------------------------------------

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

// ---- ids -----------------------------------------------------------------

/// The first subordinate range of `user` in `/etc/subuid`-format `file`
/// (matched by name or numeric id), as (start, count).
pub fn subid_range(user: &User, file: &str, id: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
        let mine = owner == user.name || owner.parse::<u32>().ok() == Some(id);
        let (start, count) = (start.parse().ok()?, count.parse().ok()?);
        (mine && count > 0).then_some((start, count))
    })
}

/// The user's subordinate uid and gid ranges, when both exist.
pub fn subid_ranges(user: &User) -> Option<((u32, u32), (u32, u32))> {
    Some((
        subid_range(user, "/etc/subuid", user.uid)?,
        subid_range(user, "/etc/subgid", user.gid)?,
    ))
}

/// (uid, gid) of `path`, not following a symlink.
pub fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// An image as `rootbox inspect --json` (run as `user`) reads it: the
/// whole document, and every entry keyed by its path from the top level
/// (`@nix/store/…`; the top level itself is ``, a subvolume's root its name).
pub struct Inspected {
    pub doc: serde_json::Value,
    pub entries: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Inspected {
    pub fn of(user: &User, image: &Path) -> Inspected {
        let out = run(rootbox(user).arg("inspect").arg("--json").arg(image));
        out.assert_success();
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect --json does not parse: {e}\n{out}"));
        let mut entries = std::collections::BTreeMap::new();
        for l in doc["listings"].as_array().expect("listings") {
            let sv = l["subvolume_path"].as_str().expect("subvolume_path");
            for e in l["entries"].as_array().expect("entries") {
                let p = e["path"].as_str().expect("path");
                let key = [sv, p]
                    .iter()
                    .filter(|x| !x.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/");
                entries.insert(key, e.clone());
            }
        }
        Inspected { doc, entries }
    }

    #[track_caller]
    pub fn get(&self, key: &str) -> &serde_json::Value {
        self.entries.get(key).unwrap_or_else(|| {
            panic!(
                "{key} is not in the image; it has:\n{}",
                self.entries.keys().cloned().collect::<Vec<_>>().join("\n")
            )
        })
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
