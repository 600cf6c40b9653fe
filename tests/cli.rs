//! What a user of the command line meets besides the image: nothing left
//! behind by a build killed with SIGKILL (the next build sweeps it, and a
//! sweep never touches a live build's files), progress on a terminal and
//! only there, shell completions and a man page, and inputs mkfs.btrfs
//! would reject refused before anything is staged.
//!
//! Phases are made long enough to hit with a fake `mkfs.btrfs` first on
//! PATH: a shell wrapper that passes `--version` through to the real one
//! and marks or sleeps around running it.

#![forbid(unsafe_code)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

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

/// A fixture whose rootfs holds `/etc/hostname`, for the checked test user.
fn fixture() -> Fx {
    let fx = Fx::new(&setup());
    fx.file("etc/hostname", "cli\n");
    fx
}

/// Installs `bin/mkfs.btrfs`: `--version` passes through to the real one;
/// otherwise `pre`, the real mkfs, `post`.
fn fake_mkfs(fx: &Fx, pre: &str, post: &str) {
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in --version) exec {real} --version;; esac\n{pre}\n{real} \"$@\"\nrc=$?\n{post}\nexit $rc\n",
        real = real_mkfs().display()
    );
    let p = fx.path("bin/mkfs.btrfs");
    write_as(&fx.user, &p, script);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `rootbox build ... -o out/NAME` with `bin/` first on PATH and TMPDIR in
/// the fixture.
fn build_cmd(fx: &Fx, name: &str, extra: &[&str]) -> Command {
    let mut cmd = rootbox(&fx.user);
    let path = format!(
        "{}:{}",
        s(&fx.path("bin")),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
        .env("TMPDIR", fx.path("tmp"))
        .args(["build", "--subvol", "@:/:default", "--rootfs"])
        .arg(fx.root())
        .arg("-o")
        .arg(fx.path("out").join(name))
        .args(extra);
    cmd
}

/// The names in `out/` and `tmp/`, sorted.
fn listing(fx: &Fx) -> Vec<String> {
    let mut v = Vec::new();
    for d in ["out", "tmp"] {
        for e in fs::read_dir(fx.path(d)).unwrap().flatten() {
            v.push(format!("{d}/{}", e.file_name().to_string_lossy()));
        }
    }
    v.sort();
    v
}

fn is_stage_running(fx: &Fx) -> bool {
    let m = fx.marker();
    !pids_with_args(|a| a.iter().any(|x| x == "__stage") && a.iter().any(|x| x.contains(&m)))
        .is_empty()
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

/// Files owned by root, which the namespace does not map: each is copied
/// into scratch space while staging (a long staging step). Root only.
fn unmapped_files(fx: &Fx, n: usize) {
    let dir = fx.root().join("var/lib/unmapped");
    create_dirs_as(&fx.user, &dir);
    for i in 0..n {
        fs::write(dir.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
}

// ---- nothing left behind ----------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Phase {
    Staging,
    Mkfs,
    Verify,
}

/// Kills a build with SIGKILL in `phase`, then runs a second build into
/// the same directory with the same TMPDIR: afterwards the second image is
/// all there is.
fn killed_then_rebuilt(phase: Phase) {
    let fx = fixture();
    let marker = unique_marker("1000.");
    let (started, done) = (fx.path("mkfs-started"), fx.path("mkfs-done"));
    match phase {
        Phase::Staging => {
            fx.tmpfs("src/root", "256m");
            fx.file("etc/hostname", "cli\n");
            unmapped_files(&fx, 6000);
            fake_mkfs(&fx, &format!("touch {}", s(&started)), "");
        }
        Phase::Mkfs => fake_mkfs(&fx, &format!("touch {}; sleep {marker}", s(&started)), ""),
        Phase::Verify => {
            fx.tmpfs("src/root", "256m");
            fx.file("etc/hostname", "cli\n");
            many_files(&fx, 20_000);
            fake_mkfs(&fx, "", &format!("touch {}", s(&done)));
        }
    }
    let mut build = start(&mut build_cmd(&fx, "killed.img", &[]));
    let reached = match phase {
        Phase::Staging => wait_until(Duration::from_secs(30), || {
            is_stage_running(&fx) && !started.exists() && !listing(&fx).is_empty()
        }),
        Phase::Mkfs => wait_until(Duration::from_secs(30), || started.exists()),
        Phase::Verify => wait_until(Duration::from_secs(60), || {
            done.exists() && !is_stage_running(&fx)
        }),
    };
    assert!(reached, "{phase:?}: the build never reached the phase");
    assert!(build.is_running(), "{phase:?}: the build ended first");
    build.signal(Signal::SIGKILL);
    let out = build.finish();
    assert_eq!(signal_of(&out.status), Some(9), "{phase:?}: {out}");
    if let Phase::Staging = phase {
        assert!(!started.exists(), "mkfs started before the kill");
    }
    assert!(
        wait_until(Duration::from_secs(10), || pids_with_args(
            |a| a.contains(&marker)
        )
        .is_empty()
            && !is_stage_running(&fx)),
        "{phase:?}: processes of the killed build are left"
    );
    let left = listing(&fx);
    // What SIGKILL leaves: its scratch space and temporary directory.
    assert!(
        left.iter().any(|n| n.starts_with("out/.rootbox-scratch-"))
            && left.iter().any(|n| n.starts_with("tmp/rootbox-build-")),
        "{phase:?}: the killed build left no scratch space to sweep (the test proves nothing): {left:?}"
    );
    assert!(!left.contains(&"out/killed.img".to_string()), "{left:?}");

    fake_mkfs(&fx, "", "");
    run(&mut build_cmd(&fx, "second.img", &[])).assert_success();
    assert_eq!(
        listing(&fx),
        vec!["out/second.img".to_string()],
        "{phase:?}: left after a killed build and a second one"
    );
}

#[test]
fn a_build_sweeps_what_a_build_killed_while_staging_left() {
    if !is_root() {
        skip!("needs root to make files the namespace does not map (a long staging step)");
    }
    killed_then_rebuilt(Phase::Staging);
}

#[test]
fn a_build_sweeps_what_a_build_killed_during_mkfs_left() {
    killed_then_rebuilt(Phase::Mkfs);
}

#[test]
fn a_build_sweeps_what_a_build_killed_while_verifying_left() {
    if !is_root() {
        skip!("needs root for a tmpfs holding 20 000 files");
    }
    killed_then_rebuilt(Phase::Verify);
}

/// The second build starts (and sweeps) while the first is in mkfs, its
/// scratch space and temporary directory present: both succeed.
#[test]
fn two_builds_into_one_directory_both_succeed() {
    let fx = fixture();
    let first_in_mkfs = fx.path("first-in-mkfs");
    // Only the first build's mkfs waits: until the second build is done.
    let second_done = fx.path("second-done");
    fake_mkfs(
        &fx,
        &format!(
            "if [ ! -e {started} ]; then touch {started}; while [ ! -e {done} ]; do sleep 0.05; done; fi",
            started = s(&first_in_mkfs),
            done = s(&second_done)
        ),
        "",
    );
    let first = start(&mut build_cmd(&fx, "first.img", &[]));
    assert!(
        wait_until(Duration::from_secs(30), || first_in_mkfs.exists()),
        "the first build's mkfs never started"
    );
    let held = listing(&fx);
    assert!(
        held.iter().any(|n| n.starts_with("out/.rootbox-scratch-")),
        "the first build holds no scratch space: {held:?}"
    );
    let second = run(&mut build_cmd(&fx, "second.img", &[]));
    write_as(&fx.user, &second_done, "");
    second.assert_success();
    first.finish().assert_success();
    assert_eq!(
        listing(&fx),
        vec!["out/first.img".to_string(), "out/second.img".to_string()]
    );
}

// ---- completions and man pages ----------------------------------------------

/// The subcommands `rootbox --help` lists (but `help`).
fn subcommands(user: &User) -> Vec<String> {
    let out = run(rootbox(user).arg("--help"));
    out.assert_success();
    let list: Vec<String> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A description too long for one line goes on, indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(list.len() >= 4, "no subcommands in --help:\n{out}");
    list
}

/// What bash offers after `rootbox WORD<Tab>`, with the script from
/// `rootbox completions bash` sourced (as bash-completion does: it calls
/// the function with COMP_WORDS and COMP_CWORD set).
fn bash_completes(user: &User, words: &[&str]) -> Out {
    let script = format!(
        "set -u\neval \"$({bin} completions bash)\"\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         _rootbox rootbox \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        bin = s(&rootbox_bin()),
        words = words.join(" "),
        cword = words.len() - 1
    );
    run(cmd_as(user, "bash").args(["--norc", "--noprofile", "-c", &script]))
}

#[test]
fn the_bash_completion_script_sources_cleanly_and_completes_subcommands() {
    let user = setup();
    let out = bash_completes(&user, &["rootbox", "bu"]);
    out.assert_success();
    assert_eq!(out.stderr, "", "sourcing the script said something:\n{out}");
    assert_eq!(out.trimmed(), "build", "rootbox bu<Tab>:\n{out}");
    // Every subcommand is offered after `rootbox `; flags after `build --la`.
    let all = bash_completes(&user, &["rootbox", "''"]);
    for sub in subcommands(&user) {
        assert!(
            all.stdout.lines().any(|l| l == sub),
            "rootbox <Tab> does not offer {sub}:\n{all}"
        );
    }
    assert!(
        !all.stdout.lines().any(|l| l.starts_with("__")),
        "hidden subcommands are offered:\n{all}"
    );
    let flag = bash_completes(&user, &["rootbox", "build", "--la"]);
    assert_eq!(flag.trimmed(), "--label", "{flag}");
}

#[test]
fn completions_exist_for_zsh_and_fish_and_name_the_subcommands() {
    let user = setup();
    for shell in ["zsh", "fish"] {
        let out = run(rootbox(&user).args(["completions", shell]));
        out.assert_success();
        for sub in subcommands(&user) {
            assert!(out.stdout.contains(&sub), "{shell}: no {sub}:\n{out}");
        }
    }
    run(rootbox(&user).args(["completions", "tcsh"]))
        .assert_code(2)
        .assert_stderr_contains("possible values");
}

#[test]
fn the_man_pages_render_and_name_every_subcommand() {
    let user = setup();
    let dir = tempdir_for(&user);
    run(rootbox(&user).arg("__man").arg(dir.path())).assert_success();
    let render = |page: &Path| {
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P", "-cbou"])
            .arg(page));
        out.assert_success();
        assert_eq!(
            out.stderr,
            "",
            "groff warns about {}:\n{out}",
            page.display()
        );
        // Justified text: words, one space apart.
        out.stdout.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let main = render(&dir.path().join("rootbox.1"));
    assert!(main.contains("rootbox - Build filesystem images"), "{main}");
    for sub in subcommands(&user) {
        assert!(
            main.contains(&format!("rootbox-{sub}(1)")),
            "rootbox(1) does not name {sub}:\n{main}"
        );
        let page = render(&dir.path().join(format!("rootbox-{sub}.1")));
        assert!(
            page.contains(&format!("rootbox {sub}")),
            "rootbox-{sub}(1):\n{page}"
        );
    }
    let build = render(&dir.path().join("rootbox-build.1"));
    assert!(
        build.contains("--label"),
        "rootbox-build(1) has no options:\n{build}"
    );
    // And man(1) reads it as a local file (scripts/install-deps installs
    // man-db; without it, a skip: a failure under CI).
    if !Path::new("/usr/bin/man").exists() {
        skip!("/usr/bin/man is missing (apt-get install man-db): man -l not tried");
    }
    let out = run(Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(dir.path().join("rootbox.1"))
        .env("MANWIDTH", "80"));
    out.assert_success();
    assert!(out.stdout.contains("SUBCOMMANDS"), "{out}");
}

// ---- what mkfs.btrfs would reject, refused first ----------------------------

#[test]
fn a_label_or_size_mkfs_would_reject_is_refused_before_staging() {
    let fx = fixture();
    let ran = fx.path("mkfs-ran");
    fake_mkfs(&fx, &format!("touch {}", s(&ran)), "");
    let long = "x".repeat(256);
    let cases: [(&[&str], &[&str]); 3] = [
        (&["--label", &long], &["label", "256 bytes", "at most 255"]),
        (&["--size", "100M"], &["size 100M", "109M", "--size auto"]),
        (&["--size", "4096"], &["size 4K", "109M"]),
    ];
    let mut failures = Vec::new();
    for (args, needles) in cases {
        let out = run(&mut build_cmd(&fx, "image.img", args));
        let missing: Vec<_> = needles
            .iter()
            .filter(|n| !out.stderr.contains(*n))
            .collect();
        if out.code() != Some(1) || !missing.is_empty() || ran.exists() || !listing(&fx).is_empty()
        {
            failures.push(format!(
                "{args:?}: missing {missing:?}, mkfs ran: {}, left {:?}\n{out}",
                ran.exists(),
                listing(&fx)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // At the limits, the same build works.
    let ok = "y".repeat(255);
    run(&mut build_cmd(
        &fx,
        "image.img",
        &["--label", &ok, "--size", "109M"],
    ))
    .assert_success();
}

// ---- progress ------------------------------------------------------------------

/// `rootbox build ...` under a pseudo-terminal (util-linux `script`), as
/// the test user; what the terminal showed.
fn build_on_a_terminal(fx: &Fx, extra: &str) -> Out {
    let cmd = format!(
        "PATH={bin}:$PATH TMPDIR={tmp} {rootbox} build --subvol @:/:default --rootfs {root} -o {out} {extra}",
        bin = s(&fx.path("bin")),
        tmp = s(&fx.path("tmp")),
        rootbox = s(&rootbox_bin()),
        root = s(&fx.root()),
        out = s(&fx.path("out/tty.img")),
    );
    let out = run(cmd_as(&fx.user, "script").args(["-qec", &cmd, "/dev/null"]));
    let _ = fs::remove_file(fx.path("out/tty.img"));
    out
}

#[test]
fn progress_shows_on_a_terminal_and_only_there() {
    let fx = fixture();
    many_files(&fx, 3000);
    fx.file("big", vec![7u8; 32 << 20]);
    // mkfs takes long enough to be watched.
    fake_mkfs(&fx, "sleep 0.5", "");
    let tty = build_on_a_terminal(&fx, "--force");
    tty.assert_success();
    for bar in ["mkfs [", "verifying ["] {
        assert!(
            tty.stdout.contains(bar),
            "no {bar:?} progress on a terminal:\n{tty}"
        );
    }
    assert!(
        tty.stdout.contains("/3,00"),
        "the verification bar has no total:\n{tty}"
    );
    // A bar redraws its line (the terminal turns every newline into \r\n).
    let redraw = "\r\x1b[2K";
    assert!(tty.stdout.contains(redraw), "{tty}");
    for quiet in ["--quiet", "--json"] {
        let out = build_on_a_terminal(&fx, &format!("--force {quiet}"));
        out.assert_success();
        assert!(
            !out.stdout.contains(redraw) && !out.stdout.contains("mkfs ["),
            "progress with {quiet}:\n{out}"
        );
    }
    let piped = run(&mut build_cmd(&fx, "piped.img", &[]));
    piped.assert_success();
    assert!(
        !piped.stderr.contains('\r') && !piped.stderr.contains("verifying ["),
        "progress bytes when stderr is a pipe:\n{piped}"
    );
}

/// Copies into scratch space (content whose owner does not map, with
/// `--store-staging copy`) show as bytes of the planned total.
#[test]
fn the_staging_copy_shows_its_progress_on_a_terminal() {
    if !is_root() {
        skip!("needs root to make files the namespace does not map");
    }
    let fx = fixture();
    let dir = fx.root().join("var/lib/unmapped");
    create_dirs_as(&fx.user, &dir);
    for i in 0..64 {
        fs::write(dir.join(format!("f{i}")), vec![b'x'; 1 << 20]).unwrap();
    }
    let tty = build_on_a_terminal(&fx, "--store-staging copy");
    tty.assert_success();
    assert!(tty.stdout.contains("copying ["), "no copy progress:\n{tty}");
    assert!(tty.stdout.contains("/64.00 MiB"), "no copy total:\n{tty}");
}
