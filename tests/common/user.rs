//! Who the tests run as: the unprivileged test user ([`unprivileged`],
//! [`test_user`], [`setup`]), commands dropped to it ([`cmd_as`]), the
//! check that the drop happened ([`assert_unprivileged`]) and its
//! subordinate id ranges ([`subid_ranges`], [`have_subids`]).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::cmd::run;

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
    // flock(2) through nix: std's File::lock needs Rust 1.89 (rust-version is 1.85).
    let lock = fs::File::create(lock_path).ok()?;
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).ok()?;
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

/// The unprivileged user, checked to be unprivileged: the first line of
/// every rootless test.
pub fn setup() -> User {
    let user = test_user();
    assert_unprivileged(&user);
    user
}

/// A host tool in the usual directories (sbin included, which the test
/// user's PATH may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The user's subordinate ranges, when it has them and newuidmap and
/// newgidmap are installed (what `--map subid` needs).
pub fn have_subids(user: &User) -> Option<((u32, u32), (u32, u32))> {
    let helpers = ["newuidmap", "newgidmap"]
        .iter()
        .all(|h| find_tool(h).is_some());
    subid_ranges(user).filter(|_| helpers)
}
