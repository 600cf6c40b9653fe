//! Faults, interruptions, concurrency and privilege: a build that
//! is killed, interrupted, or whose mkfs.btrfs crashes, is missing, too old
//! or runs out of space — or that runs where user namespaces are not
//! allowed — leaves at the output path either what was there before or
//! nothing, no process and no mount. Builds running at once stay
//! independent; two racing for one output never interleave. Nothing run
//! inside rootbox gains privileges outside.
//!
//! Phases are made long enough to hit with a fake `mkfs.btrfs` first on
//! PATH: a shell wrapper that passes `--version` through to the real one
//! and marks, sleeps or crashes around running it.

#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// The real mkfs.btrfs (`command -v`, then /usr/sbin, /sbin).
fn real_mkfs() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v mkfs.btrfs"])
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!p.is_empty(), "mkfs.btrfs is not installed");
    PathBuf::from(p)
}

impl Fx {
    /// A fixture (see [`Fx`]) whose rootfs holds `/etc/hostname`, for the
    /// unprivileged test user (checked).
    fn faulty() -> Fx {
        let fx = Fx::new(&setup());
        fx.file("etc/hostname", "faulty\n");
        fx
    }
    /// Installs `bin/mkfs.btrfs`: `--version` passes through to the real
    /// one; otherwise `pre`, the real mkfs (unless `pre` exits), `post`.
    fn fake_mkfs(&self, pre: &str, post: &str) {
        let real = real_mkfs();
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {real} --version;; esac\n{pre}\n{real} \"$@\"\nrc=$?\n{post}\nexit $rc\n",
            real = real.display()
        );
        let p = self.path("bin/mkfs.btrfs");
        write_as(&self.user, &p, script);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    /// `rootbox build` with `bin/` first on PATH and TMPDIR in the fixture.
    fn build_cmd(&self, extra: &[&str]) -> Command {
        let mut cmd = rootbox(&self.user);
        let path = format!(
            "{}:{}",
            s(&self.path("bin")),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("TMPDIR", self.path("tmp"))
            .args(["build", "--json", "--subvol", "@:/:default", "--rootfs"])
            .arg(self.root())
            .arg("-o")
            .arg(self.image())
            .args(extra);
        cmd
    }
    /// Files left in `out/` (other than the image) and `tmp/`.
    fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in ["out", "tmp"] {
            for e in fs::read_dir(self.path(d)).unwrap().flatten() {
                if e.path() != self.image() {
                    v.push(format!("{d}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        v
    }
    /// What every fault must leave: `previous` (or nothing) at the output,
    /// no process, no mount.
    #[track_caller]
    fn assert_clean_end(&self, previous: Option<&[u8]>, what: &str) {
        let gone = wait_until(Duration::from_secs(10), || self.procs().is_empty());
        assert!(
            gone,
            "{what}: processes of the build are left:\n{}",
            describe_pids(&self.procs())
        );
        let mounts = self.mounts();
        assert!(
            mounts.is_empty(),
            "{what}: mounts of the build are left: {mounts:#?}"
        );
        match previous {
            None => assert!(
                fs::symlink_metadata(self.image()).is_err(),
                "{what}: something is at the output path"
            ),
            Some(p) => assert_eq!(
                fs::read(self.image()).ok().as_deref(),
                Some(p),
                "{what}: the previous output was replaced"
            ),
        }
    }
}

/// Many small files owned by root (not mapped into the namespace: each is
/// copied into scratch space while staging). Root only.
fn unmapped_files(fx: &Fx, n: usize) {
    let dir = fx.root().join("var/lib/unmapped");
    create_dirs_as(&fx.user, &dir);
    for i in 0..n {
        fs::write(dir.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
}

/// Many small files of the test user (a long mkfs and verification).
fn many_files(fx: &Fx, n: usize) {
    for d in 0..(n / 1000).max(1) {
        let dir = fx.root().join(format!("many/d{d}"));
        create_dirs_as(&fx.user, &dir);
        for i in 0..1000.min(n) {
            let p = dir.join(format!("f{i}"));
            fs::write(&p, b"").unwrap();
            give_to(&fx.user, &p);
        }
    }
}

fn is_stage_running(fx: &Fx) -> bool {
    let m = fx.marker();
    !pids_with_args(|a| a.iter().any(|x| x == "__stage") && a.iter().any(|x| x.contains(&m)))
        .is_empty()
}

// ---- killed -----------------------------------------------------------------

#[test]
fn sigkill_during_staging() {
    if !is_root() {
        skip!("needs root to make files the namespace does not map");
    }
    let fx = Fx::faulty();
    fx.tmpfs("src/root", "256m");
    fx.file("etc/hostname", "faulty\n");
    unmapped_files(&fx, 6000);
    fx.fake_mkfs(&format!("touch {}", s(&fx.path("mkfs-started"))), "");
    let started = fx.path("mkfs-started");
    let build = start(&mut fx.build_cmd(&[]));
    let staging = wait_until(Duration::from_secs(30), || {
        is_stage_running(&fx) && !started.exists()
    });
    assert!(staging, "never saw the staging step");
    // Copies under way: a scratch directory with files in it.
    build.signal(Signal::SIGKILL);
    let out = build.finish();
    assert!(
        !started.exists(),
        "mkfs started before the kill: not a kill during staging"
    );
    assert_eq!(signal_of(&out.status), Some(9), "{out}");
    fx.assert_clean_end(None, "SIGKILL while staging");
    eprintln!("left after SIGKILL while staging: {:?}", fx.leftovers());
}

#[test]
fn sigkill_during_mkfs_keeps_the_previous_image() {
    let fx = Fx::faulty();
    let marker = unique_marker("1000.");
    fx.fake_mkfs(
        &format!("touch {}; sleep {marker}", s(&fx.path("mkfs-started"))),
        "",
    );
    write_as(&fx.user, &fx.image(), b"the previous image");
    let build = start(&mut fx.build_cmd(&["--force"]));
    assert!(
        wait_until(Duration::from_secs(30), || fx.path("mkfs-started").exists()),
        "mkfs never started"
    );
    build.signal(Signal::SIGKILL);
    let out = build.finish();
    assert_eq!(signal_of(&out.status), Some(9), "{out}");
    // The sleep of the fake mkfs is the build's too.
    let gone = wait_until(Duration::from_secs(10), || {
        pids_with_args(|a| a.contains(&marker)).is_empty()
    });
    assert!(gone, "the mkfs of a killed build is still running");
    fx.assert_clean_end(Some(b"the previous image"), "SIGKILL during mkfs");
    eprintln!("left after SIGKILL during mkfs: {:?}", fx.leftovers());
}

#[test]
fn sigkill_during_verification() {
    let fx = Fx::faulty();
    fx.tmpfs("src/root", "256m");
    fx.file("etc/hostname", "faulty\n");
    many_files(&fx, 20_000);
    let done = fx.path("mkfs-done");
    fx.fake_mkfs("", &format!("touch {}", s(&done)));
    let mut build = start(&mut fx.build_cmd(&[]));
    // After mkfs and the staging step, before the end: verification.
    let verifying = wait_until(Duration::from_secs(60), || {
        done.exists() && !is_stage_running(&fx)
    });
    assert!(verifying, "mkfs never finished");
    assert!(
        build.is_running(),
        "the build ended before it could be killed while verifying"
    );
    build.signal(Signal::SIGKILL);
    let out = build.finish();
    assert_eq!(
        signal_of(&out.status),
        Some(9),
        "the build ended by itself first:\n{out}"
    );
    fx.assert_clean_end(None, "SIGKILL while verifying");
    eprintln!("left after SIGKILL while verifying: {:?}", fx.leftovers());
}

/// SIGINT to the process group (Ctrl-C) and SIGTERM to rootbox alone
/// (`kill`, systemd): the build stops, says so in its status (killed by
/// the signal, or exit 128+N), and leaves nothing: no image, no scratch
/// space, no temporary directory.
#[test]
fn sigint_and_sigterm_stop_cleanly() {
    stop_cleanly(&[]);
}

/// The same without a user namespace (`--no-userns`, as the automatic
/// fallback runs it): no PID namespace takes the tool down with the
/// build, and the scratch copy is on disk beside the output.
#[test]
fn sigint_and_sigterm_stop_a_build_without_a_namespace_cleanly() {
    stop_cleanly(&["--no-userns"]);
}

/// [`sigint_and_sigterm_stop_cleanly`] with `extra` arguments.
fn stop_cleanly(extra: &[&str]) {
    for (sig, group) in [(Signal::SIGINT, true), (Signal::SIGTERM, false)] {
        let fx = Fx::faulty();
        let marker = unique_marker("1000.");
        fx.fake_mkfs(
            &format!("touch {}; sleep {marker}", s(&fx.path("mkfs-started"))),
            "",
        );
        let mut cmd = fx.build_cmd(extra);
        if group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let build = start(&mut cmd);
        assert!(
            wait_until(Duration::from_secs(30), || fx.path("mkfs-started").exists()),
            "mkfs never started"
        );
        if group {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(build.pid() as i32), sig).unwrap();
        } else {
            build.signal(sig);
        }
        let out = build.finish_within(Duration::from_secs(20));
        let n = sig as i32;
        assert!(
            signal_of(&out.status) == Some(n) || out.code() == Some(128 + n),
            "{sig}: want death by the signal or exit {}:\n{out}",
            128 + n
        );
        fx.assert_clean_end(None, &format!("{sig}"));
        let gone = wait_until(Duration::from_secs(10), || {
            pids_with_args(|a| a.contains(&marker)).is_empty()
        });
        assert!(gone, "{sig}: the fake mkfs still runs");
        assert_eq!(
            fx.leftovers(),
            Vec::<String>::new(),
            "{sig}: files left:\n{out}"
        );
    }
}

// ---- mkfs.btrfs fails ----------------------------------------------------------

#[test]
fn mkfs_crashing() {
    let fx = Fx::faulty();
    fx.fake_mkfs("kill -SEGV $$", "");
    let out = run(&mut fx.build_cmd(&[]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("mkfs.btrfs failed");
    out.assert_stderr_contains("139");
    fx.assert_clean_end(None, "mkfs crashed");
    assert_eq!(fx.leftovers(), Vec::<String>::new(), "{out}");
}

#[test]
fn mkfs_out_of_space_with_a_fixed_size() {
    let fx = Fx::faulty();
    // 160 MiB of content in a 120 MiB filesystem (incompressible enough:
    // no compression is asked for).
    fx.file("var/big", vec![0x5au8; 160 << 20]);
    let out = run(&mut fx.build_cmd(&["--size", "120M"]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("--size 120M is too small");
    out.assert_stderr_contains("use --size auto");
    fx.assert_clean_end(None, "ENOSPC");
    assert_eq!(fx.leftovers(), Vec::<String>::new(), "{out}");
}

/// Runs `cmd` (a rootbox command as the test user) inside `unshare
/// --user --map-root-user --mount` after `setup` (shell), passing its
/// environment. `Err` (with what unshare or `setup` said) when such a
/// namespace cannot be made here: a skip, so a failure under CI.
fn in_user_ns(fx: &Fx, cmd: &Command, setup: &str) -> Result<Out, Out> {
    in_user_ns_via(fx, cmd, setup, "")
}

/// [`in_user_ns`], the command run through `wrap` (e.g. another unshare).
fn in_user_ns_via(fx: &Fx, cmd: &Command, setup: &str, wrap: &str) -> Result<Out, Out> {
    let mut line = vec![cmd.get_program().to_os_string()];
    line.extend(cmd.get_args().map(|a| a.to_os_string()));
    let quoted: Vec<String> = line
        .iter()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let script = format!("{setup} || exit 99; exec {wrap} {}", quoted.join(" "));
    let mut sh = cmd_as(&fx.user, "unshare");
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    let out = run(sh.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]));
    if out.code() == Some(99) || out.stderr.contains("unshare failed") {
        Err(out)
    } else {
        Ok(out)
    }
}

/// No mkfs.btrfs anywhere rootbox looks (PATH, then /usr/sbin, /sbin,
/// /usr/bin, /bin): each is hidden under /dev/null in a mount namespace.
#[test]
fn mkfs_missing() {
    let fx = Fx::faulty();
    let hide = "for d in /usr/sbin /sbin /usr/bin /bin /usr/local/sbin /usr/local/bin; do \
                [ -e $d/mkfs.btrfs ] && { mount --bind /dev/null $d/mkfs.btrfs || exit 99; }; done; true";
    let out = match in_user_ns(&fx, &fx.build_cmd(&[]), hide) {
        Ok(out) => out,
        Err(out) => skip!("cannot make a user and mount namespace here:\n{out}"),
    };
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("mkfs.btrfs not found");
    out.assert_stderr_contains("btrfs-progs 6.12 or newer");
    fx.assert_clean_end(None, "no mkfs");
    assert_eq!(fx.leftovers(), Vec::<String>::new(), "{out}");
}

#[test]
fn mkfs_too_old() {
    let fx = Fx::faulty();
    let p = fx.path("bin/mkfs.btrfs");
    write_as(
        &fx.user,
        &p,
        "#!/bin/sh\necho 'mkfs.btrfs, part of btrfs-progs v6.2'\nexit 0\n",
    );
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(&mut fx.build_cmd(&[]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("6.2");
    out.assert_stderr_contains("6.12");
    fx.assert_clean_end(None, "old mkfs");
    assert_eq!(fx.leftovers(), Vec::<String>::new(), "{out}");
}

/// `user.max_user_namespaces` is a per-namespace limit its owner may
/// lower. The test user makes a namespace (`unshare --user
/// --map-root-user`), sets the limit there to 1, and uses it up with a
/// child namespace in which it is itself again (not root): rootbox runs
/// there as an ordinary user who cannot make a user namespace. rootbox
/// then either fails with the doctor's diagnosis (not a bare errno) or
/// falls back to building without one (`--no-userns`), saying why, and
/// the image is verified.
#[test]
fn user_namespaces_unavailable() {
    let fx = Fx::faulty();
    let (uid, gid) = (fx.user.uid, fx.user.gid);
    let out = match in_user_ns_via(
        &fx,
        &fx.build_cmd(&[]),
        "echo 1 > /proc/sys/user/max_user_namespaces",
        &format!("unshare --user --map-user={uid} --map-group={gid}"),
    ) {
        Ok(out) => out,
        Err(out) => skip!("cannot lower user.max_user_namespaces in a namespace here:\n{out}"),
    };
    if out.status.success() {
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["verified"], true, "{out}");
        let said = format!("{}{}", r["warnings"], out.stderr);
        assert!(
            said.contains("max_user_namespaces"),
            "the fallback does not say why:\n{out}"
        );
        let ins = inspect(&fx.user, &fx.image());
        let hostname = entries(&ins, "@")
            .into_iter()
            .find(|(p, _)| p == "etc/hostname");
        let (_, e) = hostname.expect("etc/hostname in the image");
        assert_eq!(
            (e["uid"].as_u64(), e["gid"].as_u64()),
            (Some(0), Some(0)),
            "{e}"
        );
        fx.assert_clean_end(Some(&fs::read(fx.image()).unwrap()), "no user namespaces");
    } else {
        out.assert_stderr_contains("user.max_user_namespaces");
        out.assert_stderr_contains("rootbox doctor");
        fx.assert_clean_end(None, "no user namespaces");
    }
    assert_eq!(fx.leftovers(), Vec::<String>::new(), "{out}");
}

/// Scratch space too small for the copies: `--store-staging copy`
/// copies every store path into it.
#[test]
fn scratch_space_full() {
    if !is_root() {
        skip!("needs root to mount a small tmpfs");
    }
    let fx = Fx::faulty();
    assert!(fx.tmpfs("scratch", "4m"));
    let store = fx.path("store");
    let sp = store.join("0123456789abcdfghijklmnpqrsvwxyz-big");
    write_as(&fx.user, &sp.join("data"), vec![7u8; 16 << 20]);
    let list = fx.path("store-paths");
    write_as(&fx.user, &list, format!("{}\n", s(&sp)));
    let out = run(&mut fx.build_cmd(&[
        "--subvol",
        "@nix:/nix",
        "--closure",
        s(&list),
        "--store-dir",
        s(&store),
        "--store-staging",
        "copy",
        "--scratch",
        s(&fx.path("scratch")),
    ]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("scratch space");
    out.assert_stderr_contains("No space left");
    out.assert_stderr_contains("--scratch");
    fx.assert_clean_end(None, "scratch full");
    assert_eq!(fx.leftovers(), Vec::<String>::new(), "{out}");
    let left: Vec<_> = fs::read_dir(fx.path("scratch"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the scratch directory: {left:?}");
}

// ---- concurrency ------------------------------------------------------------------

/// The inspect entries of one subvolume, by path.
fn entries(inspect: &Value, sv: &str) -> Vec<(String, Value)> {
    inspect["listings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["subvolume_path"] == sv)
        .flat_map(|l| l["entries"].as_array().unwrap().clone())
        .map(|e| (e["path"].as_str().unwrap().to_string(), e))
        .collect()
}

fn inspect(user: &User, image: &Path) -> Value {
    let out = run(rootbox(user).arg("inspect").arg("--json").arg(image));
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn eight_builds_at_once() {
    let fxs: Vec<Fx> = (0..8)
        .map(|i| {
            let fx = Fx::faulty();
            fx.file(&format!("etc/only-in-{i}"), "x".repeat(i + 1));
            fx.file(&format!("home/u{i}/file"), format!("build {i}\n"));
            fx
        })
        .collect();
    let running: Vec<Running> = fxs
        .iter()
        .enumerate()
        .map(|(i, fx)| {
            let label = format!("conc{i}");
            let mut extra = vec!["--label", &label, "--subvol", "@home:/home"];
            if i % 2 == 1 {
                extra.extend(["--compress", "zstd:1"]);
            }
            let mut cmd = fx.build_cmd(&extra);
            start(&mut cmd)
        })
        .collect();
    for (i, (r, fx)) in running.into_iter().zip(&fxs).enumerate() {
        let out = r.finish();
        out.assert_success();
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(report["label"], format!("conc{i}"), "{out}");
        let ins = inspect(&fx.user, &fx.image());
        assert_eq!(ins["filesystem"]["label"], format!("conc{i}"));
        let root: BTreeSet<String> = entries(&ins, "@").into_iter().map(|(p, _)| p).collect();
        let only: Vec<&String> = root
            .iter()
            .filter(|p| p.starts_with("etc/only-in-"))
            .collect();
        assert_eq!(
            only,
            vec![&format!("etc/only-in-{i}")],
            "build {i} holds another's file"
        );
        let home = entries(&ins, "@home");
        let f = home
            .iter()
            .find(|(p, _)| *p == format!("u{i}/file"))
            .unwrap_or_else(|| panic!("build {i}: no u{i}/file in @home: {home:?}"));
        assert_eq!(f.1["size"], format!("build {i}\n").len());
        assert_eq!(home.len(), 3, "build {i}: @home has {home:?}");
        fx.assert_clean_end(Some(&fs::read(fx.image()).unwrap()), "concurrent build");
        assert_eq!(fx.leftovers(), Vec::<String>::new());
    }
}

/// Two builds for one output without --force: exactly one wins; the
/// other fails cleanly; the image is entirely the winner's.
#[test]
fn two_builds_race_for_one_output() {
    for round in 0..3 {
        let a = Fx::faulty();
        let b = Fx::faulty();
        a.file("etc/who", "aaaa");
        b.file("etc/who", "bbbbbbbb");
        // Both pass the output check before either publishes.
        a.fake_mkfs("sleep 0.3", "");
        b.fake_mkfs("sleep 0.3", "");
        let target = a.image();
        let mut ca = a.build_cmd(&["--label", "A"]);
        let mut cb = b.build_cmd(&["--label", "B"]);
        // Both write a.image().
        let set_output = |c: &mut Command| {
            let args: Vec<OsString> = c.get_args().map(|x| x.to_os_string()).collect();
            let mut n = rootbox(&a.user);
            for (k, v) in c.get_envs() {
                if let Some(v) = v {
                    n.env(k, v);
                }
            }
            let mut it = args.into_iter();
            while let Some(x) = it.next() {
                n.arg(&x);
                if x == "-o" {
                    it.next();
                    n.arg(&target);
                }
            }
            n
        };
        let ra = start(&mut set_output(&mut ca));
        let rb = start(&mut set_output(&mut cb));
        let (oa, ob) = (ra.finish(), rb.finish());
        let wins: Vec<bool> = [&oa, &ob].iter().map(|o| o.status.success()).collect();
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: want exactly one winner:\n{oa}\n{ob}"
        );
        let (winner, loser, label, size) = if wins[0] {
            (&oa, &ob, "A", 4)
        } else {
            (&ob, &oa, "B", 8)
        };
        assert!(
            loser.stderr.contains("appeared while building")
                || loser.stderr.contains("exists: use --force"),
            "round {round}: the loser's error:\n{loser}"
        );
        let _ = winner;
        let ins = inspect(&a.user, &target);
        assert_eq!(ins["filesystem"]["label"], label);
        let who = entries(&ins, "@")
            .into_iter()
            .find(|(p, _)| p == "etc/who")
            .expect("etc/who");
        assert_eq!(
            who.1["size"], size,
            "round {round}: the image mixes both builds"
        );
        for fx in [&a, &b] {
            assert!(wait_until(Duration::from_secs(10), || fx
                .procs()
                .is_empty()));
            assert!(fx.mounts().is_empty());
        }
        assert_eq!(b.leftovers(), Vec::<String>::new());
        let left: Vec<String> = a.leftovers();
        assert!(
            left.is_empty(),
            "round {round}: left beside the image: {left:?}"
        );
    }
}

// ---- no privilege escape ---------------------------------------------------------

#[test]
fn no_new_privs_inside_run() {
    let user = test_user();
    assert_unprivileged(&user);
    let out = rb_run(&user, &["--", "grep", "NoNewPrivs", "/proc/self/status"]);
    out.assert_success();
    assert_eq!(
        status_field(&out.stdout, "NoNewPrivs"),
        Some("1"),
        "rootbox run must set NO_NEW_PRIVS:\n{out}"
    );
}

/// A setuid-root program works for the test user outside rootbox (the
/// control) but gains nothing inside `rootbox run`: it cannot read a
/// root-only file.
#[test]
fn setuid_root_gains_nothing_inside_run() {
    if !is_root() {
        skip!("needs root to make a setuid-root program");
    }
    let user = test_user();
    assert_unprivileged(&user);
    let dir = tempdir_for(&user);
    let cat = dir.path().join("suidcat");
    fs::copy("/usr/bin/cat", &cat).unwrap();
    fs::set_permissions(&cat, fs::Permissions::from_mode(0o4755)).unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, "root only\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let control = run(cmd_as(&user, &cat).arg(&secret));
    if !control.status.success() {
        skip!(
            "setuid programs do not work in {} here (nosuid?):\n{control}",
            dir.path().display()
        );
    }
    assert_eq!(control.stdout, "root only\n");
    let out = rb_run(&user, &["--", s(&cat), s(&secret)]);
    assert!(
        !out.status.success(),
        "a setuid-root program read a root-only file inside rootbox run:\n{out}"
    );
    assert!(!out.stdout.contains("root only"), "{out}");
    out.assert_stderr_contains("Permission denied");
    // Nor does newuidmap (setuid root) let the sandbox map host root.
    let out = rb_run(&user, &["--", "sh", "-c", "newuidmap $$ 0 0 1; echo rc=$?"]);
    assert!(
        !out.stdout.contains("rc=0"),
        "newuidmap succeeded inside:\n{out}"
    );
}

/// `rootbox run --ro-bind SRC DST -- sh -c SCRIPT` (with DST in SCRIPT
/// written as /mnt-ro); the host's SRC afterwards.
fn ro_bind_attempts(script: &str) -> (Out, tempfile::TempDir) {
    let user = test_user();
    assert_unprivileged(&user);
    let dir = tempdir_for(&user);
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    write_as(&user, &src.join("f"), "original\n");
    create_dirs_as(&user, &dst);
    let script = script.replace("/mnt-ro", s(&dst));
    let out = rb_run(
        &user,
        &["--ro-bind", s(&src), s(&dst), "--", "sh", "-c", &script],
    );
    (out, dir)
}

#[test]
fn read_only_binds_stay_read_only() {
    let (out, dir) = ro_bind_attempts(
        "echo x > /mnt-ro/f; echo write=$?; touch /mnt-ro/new; echo touch=$?; \
         mount -o remount,rw /mnt-ro; echo remount=$?; echo y > /mnt-ro/f; echo write2=$?",
    );
    out.assert_success();
    for field in ["write=", "touch=", "remount=", "write2="] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(field) && !l.ends_with("=0")),
            "{field} succeeded inside a read-only bind:\n{out}"
        );
    }
    let src = dir.path().join("src");
    assert_eq!(fs::read_to_string(src.join("f")).unwrap(), "original\n");
    assert!(!src.join("new").exists());
}

/// The command of `rootbox run` is root with every capability, but one
/// user namespace further in than the one that made the read-only bind:
/// the kernel locks the bind's read-only flag, so `mount -o
/// remount,bind,rw` fails and nothing reaches the host's SRC.
#[test]
fn read_only_binds_cannot_be_remounted_rw() {
    let (out, dir) = ro_bind_attempts(
        "mount -o remount,bind,rw /mnt-ro; echo remount_bind=$?; echo y > /mnt-ro/f; echo write=$?",
    );
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("remount_bind=") && !l.ends_with("=0")),
        "remount,bind,rw succeeded on a read-only bind:\n{out}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("src/f")).unwrap(),
        "original\n"
    );
}

/// mkfs.btrfs sees the staged tree read-only: a fake mkfs that tries to
/// write into its --rootdir (a new file, a bound rootfs file) fails to,
/// and the build and its sources are unaffected.
#[test]
fn mkfs_cannot_write_the_staged_tree() {
    let fx = Fx::faulty();
    let report = fx.path("attempts");
    fx.fake_mkfs(
        &format!(
            "prev=''; for a in \"$@\"; do [ \"$prev\" = --rootdir ] && root=$a; prev=$a; done\n\
             {{ touch \"$root/@/evil\"; echo new=$?; echo changed >> \"$root/@/etc/hostname\"; echo bound=$?; \
             mkdir \"$root/@/evildir\"; echo mkdir=$?; }} > {} 2>&1",
            s(&report)
        ),
        "",
    );
    let out = run(&mut fx.build_cmd(&[]));
    out.assert_success();
    let attempts = fs::read_to_string(&report).expect("the fake mkfs ran");
    for f in ["new=", "bound=", "mkdir="] {
        assert!(
            attempts
                .lines()
                .any(|l| l.starts_with(f) && !l.ends_with("=0")),
            "mkfs could write its rootdir ({f}):\n{attempts}"
        );
    }
    assert!(attempts.contains("Read-only file system"), "{attempts}");
    assert_eq!(
        fs::read_to_string(fx.root().join("etc/hostname")).unwrap(),
        "faulty\n"
    );
    let ins = inspect(&fx.user, &fx.image());
    let paths: Vec<String> = entries(&ins, "@").into_iter().map(|(p, _)| p).collect();
    assert!(!paths.iter().any(|p| p.starts_with("evil")), "{paths:?}");
}

/// mkfs.btrfs runs in a sandbox nested in the one that sealed the staged
/// tree, so the seal is locked: even as root with every capability, it
/// (or anything posing as it) cannot remount a bound source writable.
#[test]
fn mkfs_cannot_remount_the_staged_tree_rw() {
    let fx = Fx::faulty();
    let report = fx.path("attempts");
    fx.fake_mkfs(
        &format!(
            "prev=''; for a in \"$@\"; do [ \"$prev\" = --rootdir ] && root=$a; prev=$a; done\n\
             {{ mount -o remount,bind,rw \"$root/@/etc\"; echo remount=$?; \
             echo changed >> \"$root/@/etc/hostname\"; echo write=$?; }} > {} 2>&1",
            s(&report)
        ),
        "",
    );
    let out = run(&mut fx.build_cmd(&[]));
    let attempts = fs::read_to_string(&report).expect("the fake mkfs ran");
    assert_eq!(
        fs::read_to_string(fx.root().join("etc/hostname")).unwrap(),
        "faulty\n",
        "mkfs changed a source file:\n{attempts}\n{out}"
    );
}
