//! Integration tests of `rootbox run` and `rootbox doctor`: the
//! real binary, run as an unprivileged user against the real kernel.
//!
//! Every test starts with [`setup`], which picks the unprivileged user
//! (dropping from root when the tests run as root, as in CI) and checks
//! that its processes really have no privileges. Mount destinations are
//! inside per-test directories under /tmp owned by that user, or inside a
//! `--root` the test builds, never on the host's own directories.

#![forbid(unsafe_code)]

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// Kills, when dropped, every process still carrying `marker` as an
/// argument: a failing test must not leave `sleep 1000`s behind.
struct KillMarked(String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for pid in pids_with_args(|a| a.contains(&self.0)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// `sleep MARKER` processes (the marker is the sleep time).
fn sleeps(marker: &str) -> Vec<u32> {
    pids_with_args(|a| a.len() == 2 && a[0].rsplit('/').next() == Some("sleep") && a[1] == marker)
}

// ---- the harness itself -------------------------------------------------

#[test]
fn harness_drops_privileges() {
    let user = setup();
    assert_ne!(user.uid, 0);
    let out = run(cmd_as(&user, "id").arg("-u"));
    out.assert_success();
    assert_eq!(out.trimmed(), user.uid.to_string(), "{out}");
    // The copied binary is usable by the user; the temp dirs are theirs.
    run(rootbox(&user).arg("--version")).assert_success();
    let tmp = tempdir_for(&user);
    assert_eq!(owner(tmp.path()), (user.uid, user.gid));
    let out = run(cmd_as(&user, "touch").arg(tmp.path().join("f")));
    out.assert_success();
    if is_root() {
        // And it cannot do what root can.
        let out = run(cmd_as(&user, "touch").arg("/rootbox-test-must-fail"));
        assert!(!out.status.success(), "the dropped user wrote to /:\n{out}");
        assert!(!Path::new("/rootbox-test-must-fail").exists());
    }
}

// ---- 1: uid 0 inside, the caller's uid outside ----------------------------

#[test]
fn caller_is_root_inside_and_owns_its_files_outside() {
    let user = setup();
    let out = rb_run(&user, &["--", "id", "-u"]);
    out.assert_success();
    assert_eq!(out.trimmed(), "0", "{out}");

    let tmp = tempdir_for(&user);
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    create_dirs_as(&user, &src);
    let script = format!(
        "touch {0}/made-inside && stat -c %u:%g {0}/made-inside",
        s(&dst)
    );
    let out = rb_run(
        &user,
        &["--bind", s(&src), s(&dst), "--", "sh", "-c", &script],
    );
    out.assert_success();
    assert_eq!(out.trimmed(), "0:0", "owned by root inside:\n{out}");
    assert_eq!(
        owner(&src.join("made-inside")),
        (user.uid, user.gid),
        "a file made inside should be the caller's outside"
    );
}

// ---- 2: --ro-bind is read-only, --bind writable ---------------------------

#[test]
fn ro_bind_is_read_only_and_bind_is_writable() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let src = tmp.path().join("src");
    write_as(&user, &src.join("sub/existing"), "old\n");
    let (ro, rw) = (tmp.path().join("ro"), tmp.path().join("rw"));
    let script = format!(
        "touch {ro}/new && echo ro-new || echo ro-new-failed; \
         (echo x >> {ro}/sub/existing) && echo ro-append || echo ro-append-failed; \
         touch {rw}/new && echo rw-new || echo rw-new-failed",
        ro = s(&ro),
        rw = s(&rw)
    );
    let out = rb_run(
        &user,
        &[
            "--ro-bind",
            s(&src),
            s(&ro),
            "--bind",
            s(&src),
            s(&rw),
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    out.assert_success();
    assert_eq!(
        out.stdout, "ro-new-failed\nro-append-failed\nrw-new\n",
        "writes through --ro-bind must fail, through --bind succeed:\n{out}"
    );
    assert_eq!(
        out.stderr.matches("Read-only file system").count(),
        2,
        "both writes through --ro-bind must fail with EROFS:\n{out}"
    );
    assert_eq!(
        fs::read_to_string(src.join("sub/existing")).unwrap(),
        "old\n"
    );
    assert!(
        src.join("new").exists(),
        "the write through --bind is missing outside"
    );
}

// ---- 3: nothing propagates to the host ------------------------------------

#[test]
fn mounts_do_not_reach_the_host() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let t = tmp.path();
    // As root, make the directory a shared mount: a sandbox that failed to
    // stop propagation would then show its mounts below it on the host.
    let _shared = is_root().then(|| SharedMount::new(t));
    let src = t.join("src");
    create_dirs_as(&user, &src);
    let before = (mount_table(), mount_table_of_new_process(&user));

    // One run with many mounts, held open while the host's table is read.
    let script = format!(
        "touch {t}/b/ready; while [ ! -e {t}/release ]; do sleep 0.01; done; \
         cut -d' ' -f5 /proc/self/mountinfo",
        t = s(t)
    );
    let [a, b, c, p, d] = ["a", "b", "c", "p", "d"].map(|n| t.join(n));
    let sandbox = start(rootbox(&user).arg("run").args([
        "--tmpfs",
        s(&a),
        "--bind",
        s(&src),
        s(&b),
        "--ro-bind",
        s(&src),
        s(&c),
        "--proc",
        s(&p),
        "--dev",
        s(&d),
        "--tmpfs",
        &format!("{}/a/nested", s(t)),
        "--",
        "sh",
        "-c",
        &script,
    ]));
    let ready = wait_until(Duration::from_secs(20), || src.join("ready").exists());
    let during = (mount_table(), mount_table_of_new_process(&user));
    write_as(&user, &t.join("release"), "");
    let out = sandbox.finish();
    assert!(ready, "the sandbox never got ready:\n{out}");
    out.assert_success();
    let inside: Vec<&str> = out.stdout.lines().collect();
    for m in [&a, &b, &c, &p, &d, &a.join("nested")] {
        assert!(
            inside.contains(&s(m)),
            "{} is not mounted inside:\n{out}",
            m.display()
        );
    }
    // And a few plain runs.
    for args in [
        &["--tmpfs", s(&a), "--", "true"][..],
        &["--dev", s(&d), "--proc", s(&p), "--", "true"][..],
    ] {
        rb_run(&user, args).assert_success();
    }
    let after = (mount_table(), mount_table_of_new_process(&user));

    for (when, (own, other)) in [("during", &during), ("after", &after)] {
        let d = mount_diff(&before.0, own);
        assert!(
            d.is_empty(),
            "this process's mount table changed {when} the runs:\n{d}"
        );
        let d = mount_diff(&before.1, other);
        assert!(
            d.is_empty(),
            "another process's mount table changed {when} the runs:\n{d}"
        );
        for table in [own, other] {
            let below: Vec<_> = mounts_below(table, t)
                .iter()
                .map(|m| m.line.clone())
                .collect();
            let expected = usize::from(is_root()); // the shared bind itself
            assert_eq!(
                below.len(),
                expected,
                "host mounts below {}:\n{below:#?}",
                t.display()
            );
        }
    }
}

// ---- 4: exit codes ----------------------------------------------------------

#[test]
fn exit_codes_follow_the_command() {
    let user = setup();
    rb_run(&user, &["--", "sh", "-c", "exit 7"]).assert_code(7);
    rb_run(&user, &["--", "true"]).assert_code(0);
    let out = rb_run(&user, &["--", "sh", "-c", "kill -9 $$"]);
    out.assert_code(137);
    let out = rb_run(&user, &["--", "sh", "-c", "kill -TERM $$"]);
    out.assert_code(143);

    let out = rb_run(&user, &["--", "rootbox-test-no-such-command"]);
    out.assert_code(127)
        .assert_stderr_contains("rootbox-test-no-such-command");
    let out = rb_run(&user, &["--", "/rootbox-test/no/such/path"]);
    out.assert_code(127)
        .assert_stderr_contains("/rootbox-test/no/such/path");
}

#[test]
fn setup_failures_exit_125_and_name_the_path() {
    let user = setup();
    let tmp = tempdir_for(&user);
    // Refused before anything starts.
    let missing = "/nonexistent/rootbox-test-missing-source";
    let out = rb_run(
        &user,
        &["--bind", missing, s(&tmp.path().join("x")), "--", "true"],
    );
    out.assert_code(125).assert_stderr_contains(missing);
    assert!(
        !tmp.path().join("x").exists(),
        "a failed run left its mount point"
    );

    // Fails in the child: the user cannot create a mount point in /.
    let denied = format!("/{}", unique_marker("rootbox-test-denied-"));
    let out = rb_run(&user, &["--tmpfs", &denied, "--", "true"]);
    out.assert_code(125).assert_stderr_contains(&denied);
    assert!(!Path::new(&denied).exists());

    // A missing --root.
    let out = rb_run(
        &user,
        &["--root", "/nonexistent/rootbox-test-root", "--", "true"],
    );
    out.assert_code(125)
        .assert_stderr_contains("/nonexistent/rootbox-test-root");
}

// ---- 5: SIGKILL of rootbox leaves no orphan -------------------------------

fn sigkill_leaves_no_orphan(extra: &[&str], script: Option<&str>, sleeps_expected: usize) {
    let user = setup();
    let marker = unique_marker("1000.");
    let _cleanup = KillMarked(marker.clone());
    let mut cmd = rootbox(&user);
    cmd.arg("run").args(extra).arg("--");
    match script {
        Some(sc) => cmd.args(["sh", "-c", &sc.replace("MARKER", &marker)]),
        None => cmd.args(["sleep", &marker]),
    };
    let mut sandbox = start(&mut cmd);
    let started = wait_until(Duration::from_secs(20), || {
        sleeps(&marker).len() == sleeps_expected
    });
    if !started {
        let running = sandbox.is_running();
        if running {
            sandbox.signal(Signal::SIGKILL);
        }
        panic!(
            "{sleeps_expected} `sleep {marker}` never ran (found {:?}):\n{}",
            sleeps(&marker),
            sandbox.finish()
        );
    }
    let pids = sleeps(&marker);
    sandbox.signal(Signal::SIGKILL);
    let out = sandbox.finish();
    assert_eq!(
        signal_of(&out.status),
        Some(9),
        "rootbox should have died of SIGKILL:\n{out}"
    );
    let gone = wait_until(Duration::from_secs(5), || sleeps(&marker).is_empty());
    assert!(
        gone,
        "the command outlived rootbox (it ran as {pids:?}); still there:\n{}",
        describe_pids(&sleeps(&marker))
    );
}

#[test]
fn sigkill_of_rootbox_kills_the_command() {
    sigkill_leaves_no_orphan(&[], None, 1);
}

#[test]
fn sigkill_of_rootbox_kills_the_whole_pid_namespace() {
    sigkill_leaves_no_orphan(&["--unshare-pid"], Some("sleep MARKER & sleep MARKER"), 2);
}

// ---- 6: SIGTERM and SIGINT are forwarded -----------------------------------

#[test]
fn sigterm_and_sigint_are_forwarded() {
    let user = setup();
    for (extra, sig, code) in [
        (&[][..], Signal::SIGTERM, 143),
        (&[][..], Signal::SIGINT, 130),
        (&["--unshare-pid"][..], Signal::SIGTERM, 143),
    ] {
        let marker = unique_marker("1000.");
        let _cleanup = KillMarked(marker.clone());
        // With default dispositions, as from a terminal: a shell without
        // job control starts background jobs with SIGINT ignored, and an
        // ignored signal is discarded before rootbox could forward it
        // (rootbox keeps an inherited SIG_IGN, as such a job expects).
        let sandbox = start(
            cmd_as(&user, "env")
                .arg("--default-signal=INT,TERM")
                .arg(rootbox_bin())
                .arg("run")
                .args(extra)
                .args(["--", "sleep", &marker]),
        );
        let started = wait_until(Duration::from_secs(20), || sleeps(&marker).len() == 1);
        if !started {
            sandbox.signal(Signal::SIGKILL);
            panic!("`sleep {marker}` never ran:\n{}", sandbox.finish());
        }
        sandbox.signal(sig);
        let out = sandbox.finish_within(Duration::from_secs(10));
        assert_eq!(
            out.code(),
            Some(code),
            "rootbox {extra:?} should forward {sig} and exit {code}:\n{out}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || sleeps(&marker).is_empty()),
            "the command survived {sig}:\n{}",
            describe_pids(&sleeps(&marker))
        );
    }
}

// ---- 7: symlinks cannot redirect mounts ----------------------------------

#[test]
fn symlinks_at_mount_targets_stay_inside_the_root() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let t = tmp.path();
    // root sits three levels down, so that `rel -> ../../..`, followed on
    // the host, would land in t (writable by the user), not in /.
    let root = t.join("a/b/root");
    host_tools_rootfs(&user, &root);
    create_dirs_as(&user, &root.join("etc"));
    symlink_as(&user, "/etc", &root.join("mnt"));
    symlink_as(&user, "../../..", &root.join("rel"));
    let src_dir = tempdir_for(&user);
    write_as(&user, &src_dir.path().join("f"), "from-src\n");
    let listing = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let host_etc = listing(Path::new("/etc"));

    // A symlink as the mount point itself is refused.
    let mut args = vec!["--root", s(&root)];
    args.extend(HOST_USR);
    let mut tmpfs_on_link = args.clone();
    tmpfs_on_link.extend(["--tmpfs", "/mnt", "--", "true"]);
    let out = rb_run(&user, &tmpfs_on_link);
    out.assert_code(125).assert_stderr_contains("symlink");
    out.assert_stderr_contains("/mnt");

    // Symlinks on the way resolve inside the root.
    let name = unique_marker("rootbox-test-y-");
    let via_abs = format!("/mnt/{name}");
    let mut binds = args.clone();
    binds.extend([
        "--bind",
        s(src_dir.path()),
        "/rel/x",
        "--bind",
        s(src_dir.path()),
        &via_abs,
        "--",
        "sh",
        "-c",
    ]);
    let script = format!("cat /x/f /etc/{name}/f");
    binds.push(&script);
    let out = rb_run(&user, &binds);
    out.assert_success();
    assert_eq!(out.stdout, "from-src\nfrom-src\n", "{out}");
    assert!(
        root.join("x").is_dir(),
        "/rel/x should be {}/x",
        root.display()
    );
    assert!(
        root.join("etc").join(&name).is_dir(),
        "/mnt/{name} should be in the root's /etc"
    );
    assert!(
        !t.join("x").exists(),
        "a bind followed rel -> ../../.. out of the root"
    );
    assert!(
        !Path::new("/etc").join(&name).exists(),
        "a bind followed mnt -> /etc to the host"
    );
    assert_eq!(listing(t), ["a"], "something was created next to the root");
    assert_eq!(listing(&t.join("a")), ["b"]);
    assert_eq!(listing(&t.join("a/b")), ["root"]);
    assert_eq!(
        listing(Path::new("/etc")),
        host_etc,
        "the host's /etc changed"
    );
}

// ---- 8: --root with a busybox root filesystem ------------------------------

#[test]
fn root_dir_is_all_the_command_sees() {
    let user = setup();
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        skip!("/bin/busybox is missing: apt-get install busybox-static");
    }
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    create_dirs_as(&user, &root.join("bin"));
    fs::copy(busybox, root.join("bin/busybox")).expect("copying busybox");
    give_to(&user, &root.join("bin/busybox"));
    write_as(&user, &root.join("etc/hostname"), "rootbox-test-root\n");
    let script = "bb=/bin/busybox; \
        $bb cat /etc/hostname; \
        $bb ls -1 /; \
        if [ -e /usr ]; then echo usr-present; else echo usr-absent; fi; \
        echo gone > /dev/null && echo devnull-ok; \
        $bb head -c 3 /dev/zero | $bb wc -c; \
        [ -e /proc/self/status ] && echo proc-ok; \
        $bb touch /tmp/t && echo tmp-ok";
    let out = rb_run(
        &user,
        &[
            "--root",
            s(&root),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ],
    );
    out.assert_success();
    let want =
        "rootbox-test-root\nbin\ndev\netc\nproc\ntmp\nusr-absent\ndevnull-ok\n3\nproc-ok\ntmp-ok\n";
    assert_eq!(out.stdout.replace(' ', ""), want, "{out}");
    assert!(
        !root.join("tmp/t").exists(),
        "/tmp should have been a tmpfs"
    );
}

// ---- 9: rootbox inside rootbox ------------------------------------------------

#[test]
fn rootbox_runs_inside_rootbox() {
    let user = setup();
    let bin = rootbox_bin();
    let dir = s(bin.parent().unwrap());
    // Both the default (auto) map and an explicit single map, inside.
    for inner in [&["--map", "single"][..], &[][..]] {
        let mut args = vec!["--bind", dir, dir, "--", s(&bin), "run"];
        args.extend(inner);
        args.extend(["--", "id", "-u"]);
        let out = rb_run(&user, &args);
        out.assert_success();
        assert_eq!(out.trimmed(), "0", "{out}");
    }
}

// ---- 10: subordinate ids ------------------------------------------------------

#[test]
fn subid_map_lets_root_give_files_away() {
    let user = setup();
    let Some(((sub_uid, _), (sub_gid, _))) = have_subids(&user) else {
        skip!(
            "{} has no subordinate range in /etc/subuid and /etc/subgid, or uidmap is missing",
            user.name
        );
    };
    let tmp = tempdir_for(&user);
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    write_as(&user, &src.join("f"), "");
    write_as(&user, &src.join("g"), "");
    let bind = ["--bind", s(&src), s(&dst)];

    let script = format!("chown 1000:100 {0}/f && stat -c %u:%g {0}/f", s(&dst));
    let mut args = vec!["--map", "subid"];
    args.extend(bind);
    args.extend(["--", "sh", "-c", &script]);
    let out = rb_run(&user, &args);
    out.assert_success();
    assert_eq!(out.trimmed(), "1000:100", "{out}");
    assert_eq!(
        owner(&src.join("f")),
        (sub_uid + 999, sub_gid + 99),
        "1000:100 inside should be the subordinate ids {}:{} outside",
        sub_uid + 999,
        sub_gid + 99
    );

    let g = format!("{}/g", s(&dst));
    let mut args = vec!["--map", "single"];
    args.extend(bind);
    args.extend(["--", "chown", "1000:100", &g]);
    let out = rb_run(&user, &args);
    assert!(
        !out.status.success(),
        "chown to an unmapped id must fail:\n{out}"
    );
    out.assert_stderr_contains("Invalid argument");
    assert_eq!(owner(&src.join("g")), (user.uid, user.gid));
}

// ---- 11: OCI round trip ----------------------------------------------------------

#[test]
fn oci_config_round_trip_runs_the_same() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    host_tools_rootfs(&user, &root);
    let x = tmp.path().join("x-src");
    write_as(&user, &x.join("f"), "from-x\n");
    let mut args = vec!["--root", s(&root)];
    args.extend(HOST_USR);
    args.extend([
        "--ro-bind",
        s(&x),
        "/x",
        "--tmpfs",
        "/t",
        "--setenv",
        "A",
        "B",
        "--",
        "sh",
        "-c",
        "cat /x/f; echo $A; touch /t/ok && echo tmp-ok; exit 3",
    ]);

    let direct = rb_run(&user, &args);
    direct.assert_code(3);
    assert_eq!(direct.stdout, "from-x\nB\ntmp-ok\n", "{direct}");

    let mut print = vec!["--print-oci-config"];
    print.extend(&args);
    let printed = rb_run(&user, &print);
    printed.assert_success();
    let spec: serde_json::Value = serde_json::from_str(&printed.stdout)
        .unwrap_or_else(|e| panic!("--print-oci-config is not JSON ({e}):\n{printed}"));
    assert_eq!(spec["root"]["path"], s(&root), "{printed}");
    let config = tmp.path().join("config.json");
    write_as(&user, &config, &printed.stdout);

    let via_oci = rb_run(&user, &["--oci-config", s(&config)]);
    assert_eq!(
        (via_oci.code(), via_oci.stdout.as_str()),
        (direct.code(), direct.stdout.as_str()),
        "the OCI config should run like the flags did:\n{via_oci}\n{direct}"
    );
}

// ---- 12: --drop-caps ----------------------------------------------------------------

#[test]
fn drop_caps_leaves_root_without_power() {
    let user = setup();
    let subid = have_subids(&user).is_some();
    let tmp = tempdir_for(&user);
    let m = tmp.path().join("m");
    create_dirs_as(&user, &m);
    write_as(&user, &tmp.path().join("f"), "");
    // chown to another user needs CAP_CHOWN only when that user is mapped.
    let map = if subid { "subid" } else { "single" };
    let script = format!(
        "grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
         mount -t tmpfs none {m} && echo mount-ok || echo mount-failed; \
         chown 1:1 {f} && echo chown-ok || echo chown-failed",
        m = s(&m),
        f = s(&tmp.path().join("f"))
    );
    let caps = |out: &Out| {
        let eff = status_field(&out.stdout, "CapEff").map(str::to_string);
        let bnd = status_field(&out.stdout, "CapBnd").map(str::to_string);
        (
            eff.unwrap_or_else(|| panic!("no CapEff:\n{out}")),
            bnd.unwrap(),
        )
    };

    let dropped = rb_run(
        &user,
        &["--map", map, "--drop-caps", "--", "sh", "-c", &script],
    );
    dropped.assert_success();
    let (eff, bnd) = caps(&dropped);
    assert_eq!(eff, "0000000000000000", "{dropped}");
    assert_eq!(bnd, "0000000000000000", "{dropped}");
    assert!(dropped.stdout.contains("mount-failed\n"), "{dropped}");
    assert!(dropped.stdout.contains("chown-failed\n"), "{dropped}");
    assert_eq!(owner(&tmp.path().join("f")), (user.uid, user.gid));

    let full = rb_run(&user, &["--map", map, "--", "sh", "-c", &script]);
    full.assert_success();
    let (eff, bnd) = caps(&full);
    assert_ne!(
        eff, "0000000000000000",
        "without --drop-caps root has capabilities:\n{full}"
    );
    assert_eq!(
        eff, bnd,
        "every capability of the bounding set is effective:\n{full}"
    );
    assert!(full.stdout.contains("mount-ok\n"), "{full}");
    if subid {
        assert!(full.stdout.contains("chown-ok\n"), "{full}");
    }
}

// ---- 13: --unshare-net ------------------------------------------------------------------

#[test]
fn unshare_net_leaves_only_loopback() {
    let user = setup();
    let out = rb_run(&user, &["--unshare-net", "--", "cat", "/proc/net/dev"]);
    out.assert_success();
    let ifaces: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    assert_eq!(ifaces, ["lo"], "{out}");
}

// ---- 14: rootbox doctor ------------------------------------------------------------------

#[test]
fn doctor_passes_and_reports_each_check() {
    let user = setup();
    let out = run(rootbox(&user).arg("doctor"));
    out.assert_code(0);
    for check in [
        "user namespace (single id map)",
        "mounts in the namespace",
        "newuidmap",
        "newgidmap",
        "subordinate id range",
        "mkfs.btrfs",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with('[') && l.contains(&format!("] {check}:")));
        assert!(line.is_some(), "no line for {check:?}:\n{out}");
        assert!(
            !line.unwrap().starts_with("[FAIL]"),
            "{check} failed:\n{out}"
        );
    }
}
