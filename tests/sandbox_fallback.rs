//! Where the sandbox cannot have everything: `--map auto`
//! falls back to the single map, with one warning, where the setuid
//! newuidmap cannot work (an empty capability bounding set, no_new_privs);
//! an explicit `--map subid` fails with the cause; a chroot is named as the
//! cause when the kernel refuses a user namespace; and log colour follows
//! the terminal, `NO_COLOR` and `--color`.
//!
//! Every rootless run starts as the unprivileged test user (tests/common),
//! checked to have no capabilities. The confined runs go through util-linux
//! `setpriv` exactly as an operator would confine rootbox (`--bounding-set
//! -all`, `--no-new-privs`), and each test first checks from
//! /proc/self/status that the confinement really is in place.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// The unprivileged user, checked to be unprivileged.
fn setup() -> User {
    let user = test_user();
    assert_unprivileged(&user);
    user
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The ways the tests confine rootbox, as setpriv options.
const NO_BOUNDING_SET: &[&str] = &["--inh-caps=-all", "--bounding-set=-all"];
const NO_NEW_PRIVS: &[&str] = &["--no-new-privs"];

/// `program` as `user` under `setpriv OPTS`. Dropping the bounding set
/// needs CAP_SETPCAP, so as root setpriv itself switches to the user after
/// confining; as an ordinary user only `--no-new-privs` is possible, and
/// `None` says the test cannot run here.
fn confined(user: &User, opts: &[&str], program: impl AsRef<std::ffi::OsStr>) -> Option<Command> {
    let mut cmd = Command::new("setpriv");
    if is_root() {
        cmd.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    } else if opts != NO_NEW_PRIVS {
        skipped(format_args!(
            "dropping the capability bounding set needs root to start the test"
        ));
        return None;
    }
    cmd.args(opts).arg("--").arg(program).current_dir("/");
    Some(cmd)
}

/// Checks that `opts` really confine a process as the test wants: the
/// user's ids, no capabilities, and the bounding set or no_new_privs.
fn assert_confined(user: &User, opts: &[&str]) {
    let mut cmd = confined(user, opts, "cat").unwrap();
    let out = run(cmd.arg("/proc/self/status"));
    out.assert_success();
    let field = |f: &str| status_field(&out.stdout, f).unwrap_or("?").to_string();
    assert_eq!(
        field("Uid").split_whitespace().next(),
        Some(user.uid.to_string().as_str())
    );
    assert_eq!(field("CapEff"), "0000000000000000", "{out}");
    if opts == NO_BOUNDING_SET {
        assert_eq!(field("CapBnd"), "0000000000000000", "{out}");
    } else {
        assert_eq!(field("NoNewPrivs"), "1", "{out}");
    }
}

/// Whether `--map subid` can work here: the user has subordinate ranges
/// and newuidmap/newgidmap are installed (else there is nothing to fall
/// back from: a skip, which fails under CI). Where they are, `--map subid`
/// must work unconfined: a failure then is the bug under test, not a skip.
fn subid_works(user: &User) -> bool {
    if have_subids(user).is_none() {
        skipped(format_args!(
            "{} has no /etc/subuid and /etc/subgid range, or newuidmap/newgidmap are missing \
             (apt-get install uidmap; scripts/setup-test-user)",
            user.name
        ));
        return false;
    }
    let out = run(rootbox(user).args(["run", "--map", "subid", "--", "cat", "/proc/self/uid_map"]));
    assert!(
        out.status.success(),
        "--map subid fails unconfined, although {} has subordinate ranges and newuidmap:\n{out}",
        user.name
    );
    assert!(out.stdout.lines().count() > 1, "{out}");
    true
}

/// The warning lines of a run's stderr.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("WARN")).collect()
}

#[track_caller]
fn assert_one_fallback_warning(out: &Out, why: &str) {
    let w = warnings(&out.stderr);
    assert_eq!(w.len(), 1, "want exactly one warning:\n{out}");
    assert!(
        w[0].contains("--map auto: mapping only your own uid and gid"),
        "{out}"
    );
    assert!(
        w[0].contains("subordinate owners"),
        "the warning must say what is lost:\n{out}"
    );
    assert!(
        w[0].contains(why),
        "the warning must say why ({why}):\n{out}"
    );
}

fn auto_run_falls_back(opts: &[&str], why: &str) {
    let user = setup();
    if !subid_works(&user) {
        return;
    }
    let Some(mut cmd) = confined(&user, opts, rootbox_bin()) else {
        return;
    };
    assert_confined(&user, opts);
    let out = run(cmd.args(["run", "--", "cat", "/proc/self/uid_map"]));
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "want the single map:\n{out}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", &user.uid.to_string(), "1"],
        "{out}"
    );
    assert_one_fallback_warning(&out, why);
}

fn explicit_subid_fails(opts: &[&str], why: &str) {
    let user = setup();
    if !subid_works(&user) {
        return;
    }
    let Some(cmd) = confined(&user, opts, rootbox_bin()) else {
        return;
    };
    assert_confined(&user, opts);
    for map in ["subid", "subrange"] {
        let out = run(cmd_clone(&cmd).args(["run", "--map", map, "--", "true"]));
        out.assert_code(125);
        out.assert_stderr_contains("a subordinate id range cannot be mapped");
        out.assert_stderr_contains(why);
    }
}

/// A fresh copy of a `setpriv … --` command (Command is not Clone).
fn cmd_clone(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args()).current_dir("/");
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

#[test]
fn auto_run_without_a_bounding_set_maps_a_single_id_and_says_why() {
    auto_run_falls_back(NO_BOUNDING_SET, "CapBnd: 0000000000000000");
}

#[test]
fn auto_run_under_no_new_privs_maps_a_single_id_and_says_why() {
    auto_run_falls_back(NO_NEW_PRIVS, "no_new_privs");
}

#[test]
fn explicit_subid_without_a_bounding_set_fails_naming_it() {
    explicit_subid_fails(NO_BOUNDING_SET, "lacks CAP_SETUID and CAP_SETGID");
}

#[test]
fn explicit_subid_under_no_new_privs_fails_naming_it() {
    explicit_subid_fails(NO_NEW_PRIVS, "no_new_privs");
}

/// A tiny rootfs: a file of the user's, and one of its subordinate id
/// start+1000 (which --map subid would give to 1000 in the image).
fn tiny_rootfs(user: &User, dir: &Path) -> bool {
    write_as(user, &dir.join("root/etc/hostname"), "tiny\n");
    let sub = dir.join("root/etc/sub");
    write_as(user, &sub, "sub\n");
    let Some(((ustart, _), (gstart, _))) = subid_ranges(user) else {
        return false;
    };
    if !is_root() {
        return false;
    }
    std::os::unix::fs::lchown(&sub, Some(ustart + 1000), Some(gstart + 1000)).expect("chown");
    true
}

fn auto_build_falls_back(opts: &[&str], why: &str) {
    let user = setup();
    if !subid_works(&user) {
        return;
    }
    let tmp = tempdir_for(&user);
    if !tiny_rootfs(&user, tmp.path()) {
        skip!("the rootfs with a subordinate owner needs root and a range");
    }
    let Some(mut cmd) = confined(&user, opts, rootbox_bin()) else {
        return;
    };
    assert_confined(&user, opts);
    let img = tmp.path().join("img");
    let root = tmp.path().join("root");
    let out = run(cmd.args([
        "build",
        "--rootfs",
        s(&root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ]));
    out.assert_success();
    assert_one_fallback_warning(&out, why);
    // The single map: the subordinate owner did not map, and the image
    // gives its file to root, as it gives the user's own files.
    let image = Inspected::of(&user, &img);
    for path in ["@/etc/hostname", "@/etc/sub"] {
        let e = image.get(path);
        assert_eq!(
            (e["uid"].as_u64(), e["gid"].as_u64()),
            (Some(0), Some(0)),
            "{path}: {e}"
        );
    }
}

#[test]
fn auto_build_without_a_bounding_set_maps_a_single_id_and_says_why() {
    auto_build_falls_back(NO_BOUNDING_SET, "CapBnd: 0000000000000000");
}

#[test]
fn auto_build_under_no_new_privs_maps_a_single_id_and_says_why() {
    auto_build_falls_back(NO_NEW_PRIVS, "no_new_privs");
}

// ---- a chroot -------------------------------------------------------------

/// Copies `bin` and the libraries `ldd` names into `jail`, at their paths.
fn jail_with(bin: &Path, jail: &Path) {
    let out = run(Command::new("ldd").arg(bin));
    out.assert_success();
    let mut files = vec![bin.to_path_buf()];
    files.extend(
        out.stdout
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(std::path::PathBuf::from),
    );
    for f in files {
        let to = jail.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&f, &to).unwrap_or_else(|e| panic!("copying {} into the jail: {e}", f.display()));
    }
    fs::create_dir_all(jail.join("proc")).unwrap();
}

/// `rootbox run` and `rootbox doctor` chrooted as the test user: the kernel
/// refuses the user namespace, and rootbox says the chroot is why.
#[test]
fn a_chroot_is_named_as_the_cause() {
    let user = setup();
    if !is_root() {
        skip!("chroot needs root to start the test");
    }
    let jail = tempdir_for(&user);
    let bin = rootbox_bin();
    jail_with(&bin, jail.path());
    let inside = Path::new("/").join(bin.strip_prefix("/").unwrap());
    // A private mount namespace for the jail's /proc; chroot then switches
    // to the user by number (the jail has no /etc/passwd).
    let script = format!(
        "mount -t proc proc {jail}/proc && exec chroot --userspec={u}:{g} --groups={g} {jail} \"$@\"",
        jail = s(jail.path()),
        u = user.uid,
        g = user.gid
    );
    let chrooted = |args: &[&str]| {
        run(Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg(&inside)
            .args(args))
    };
    // It really runs in the jail (no `true` there), as the user.
    let out = chrooted(&["doctor"]);
    assert!(
        out.stdout
            .starts_with(&format!("rootbox doctor (uid {})", user.uid)),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("[FAIL] chroot: this process runs in a chroot"),
        "doctor must report the chroot:\n{out}"
    );

    let out = chrooted(&["run", "--", "/rootbox-does-not-matter"]);
    out.assert_code(125);
    out.assert_stderr_contains("cannot create a user namespace");
    out.assert_stderr_contains("runs in a chroot");
    out.assert_stderr_contains("pivot_root");
    assert!(
        !out.stderr.contains("security module"),
        "the chroot, not a security module, is the cause:\n{out}"
    );

    // Outside the jail, doctor says there is none.
    let out = run(rootbox(&user).arg("doctor"));
    assert!(
        out.stdout.contains("[ok  ] chroot: not in a chroot"),
        "{out}"
    );
}

// ---- colour ----------------------------------------------------------------

/// A run that warns (`--map auto` under no_new_privs, for a user with a
/// range: the fallback warning), its stderr piped to the test.
fn warning_run(user: &User, extra: &[&str]) -> Option<Out> {
    let mut cmd = confined(user, NO_NEW_PRIVS, rootbox_bin())?;
    cmd.args(extra)
        .args(["run", "--", "true"])
        .env_remove("NO_COLOR");
    Some(run(&mut cmd))
}

#[test]
fn piped_stderr_has_no_colour_and_color_always_has() {
    let user = setup();
    if !subid_works(&user) {
        return;
    }
    let Some(plain) = warning_run(&user, &[]) else {
        return;
    };
    plain.assert_success();
    assert_eq!(
        warnings(&plain.stderr).len(),
        1,
        "the run must warn:\n{plain}"
    );
    assert!(
        !plain.stderr.as_bytes().contains(&0x1b),
        "piped stderr must carry no escape byte:\n{plain:?}",
        plain = plain.stderr
    );
    let never = warning_run(&user, &["--color", "never"]).unwrap();
    assert!(!never.stderr.as_bytes().contains(&0x1b), "{}", never.stderr);

    let always = warning_run(&user, &["--color", "always"]).unwrap();
    always.assert_success();
    assert!(
        always.stderr.as_bytes().contains(&0x1b),
        "--color always must colour:\n{}",
        always.stderr
    );
}

/// `NO_COLOR` turns colour off even on a terminal (`script` gives the run a
/// pseudo-terminal as stderr); without it, the terminal gets colour.
#[test]
fn no_color_wins_on_a_terminal() {
    let user = setup();
    if !subid_works(&user) {
        return;
    }
    let Some(base) = confined(&user, NO_NEW_PRIVS, "script") else {
        return;
    };
    let line = format!("{} run -- true", s(&rootbox_bin()));
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = cmd_clone(&base);
        cmd.args(["-qec", &line, "/dev/null"])
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        run(&mut cmd)
    };
    let coloured = on_tty(None);
    coloured.assert_success();
    assert!(coloured.stdout.contains("WARN"), "{coloured}");
    assert!(
        coloured.stdout.as_bytes().contains(&0x1b),
        "a terminal gets colour:\n{coloured}"
    );
    let plain = on_tty(Some("1"));
    plain.assert_success();
    assert!(plain.stdout.contains("WARN"), "{plain}");
    assert!(
        !plain.stdout.as_bytes().contains(&0x1b),
        "NO_COLOR=1:\n{plain}"
    );
}
