//! Running commands: the rootbox binary any user can execute
//! ([`rootbox_bin`], [`rootbox`]), commands with a time limit and readable
//! failures ([`run`], [`start`], [`Out`]), polling ([`wait_until`]) and
//! processes by their arguments ([`pids_with_args`]).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::user::{cmd_as, User};

/// A path as a command-line argument (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Arguments as `OsString`s.
pub fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
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

/// `rootbox run ARGS...` as `user`, to its end.
pub fn rb_run(user: &User, args: &[&str]) -> Out {
    run(rootbox(user).arg("run").args(args))
}

/// Processes with their arguments, one a line, for messages.
pub fn describe_pids(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| format!("{p}: {}", cmdline(*p).join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}
