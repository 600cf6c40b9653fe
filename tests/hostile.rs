//! Hostile inputs to `rootbox build`: every case either fails with a
//! specific message that names the input and the fix — leaving nothing at
//! the output path, nothing new in the output directory and nothing in the
//! temporary directory — or makes a correct image, read back with
//! `rootbox inspect --json` (and `btrfs restore` for content).
//!
//! Around every build, failed ones included, the sources (rootfs, store
//! paths, closure files, specs: everything under the case's `src/`) are
//! snapshotted ([`Snapshot`]) — content, type, owner, mode, mtime and
//! ctime, xattrs, symlink targets, device numbers — and must be unchanged:
//! rootbox never modifies its inputs. (atime is left out: reading a file
//! may update it.) After every build no mount and no process of the build
//! may remain.
//!
//! The cases are grouped in tables, one `#[test]` per table; a table runs
//! every case and reports all failures together.

#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use serde_json::Value;
use std::os::fd::AsRawFd;

// ---- the fixture ---------------------------------------------------------------

impl Fx {
    /// `src/closure-info` listing `paths` (as given, one per line), with a
    /// registration of `registered` when given.
    fn closure(&self, listed: &[String], registered: Option<&[String]>) -> PathBuf {
        let info = self.path("src/closure-info");
        write_as(
            &self.user,
            &info.join("store-paths"),
            listed.join("\n") + "\n",
        );
        if let Some(reg) = registered {
            write_as(&self.user, &info.join("registration"), registration(reg));
        }
        info
    }
    /// Writes a spec file into src/ and returns `--spec PATH`.
    fn spec(&self, json: &str) -> Vec<OsString> {
        let p = self.path("src/spec.json");
        write_as(&self.user, &p, json);
        args(&["--spec", s(&p)])
    }
}

fn registration(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("{p}\nsha256:{}\n{}\n\n0\n", "1".repeat(52), 1024))
        .collect()
}

fn rootfs_args(fx: &Fx, subvols: &[&str]) -> Vec<OsString> {
    let mut v = args(&["--rootfs", s(&fx.root())]);
    for sv in subvols {
        v.push("--subvol".into());
        v.push(sv.into());
    }
    v
}

/// The usual layout: `@` at / (default) and `@nix` at /nix.
fn std_args(fx: &Fx) -> Vec<OsString> {
    rootfs_args(fx, &["@:/:default", "@nix:/nix"])
}

fn listing(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// An id no one on the machine has: files owned by it do not map into the
/// namespace (not the test user's, not in its subordinate range).
const STRANGER: u32 = 4_000_123;

// ---- running a build -------------------------------------------------------------

/// A finished build and what it left.
struct Built {
    out: Out,
    /// `--json` report (successful builds).
    report: Value,
    /// `rootbox inspect --json` of the image (successful builds).
    inspect: Value,
}

impl Built {
    /// The inspect entry at `path` (escaped, relative) in subvolume `sv`.
    fn entry(&self, sv: &str, path: &str) -> Option<&Value> {
        self.inspect["listings"]
            .as_array()?
            .iter()
            .find(|l| l["subvolume_path"] == sv)?["entries"]
            .as_array()?
            .iter()
            .find(|e| e["path"] == path)
    }

    #[track_caller]
    fn expect(&self, sv: &str, path: &str) -> &Value {
        self.entry(sv, path).unwrap_or_else(|| {
            panic!(
                "no {path:?} in subvolume {sv:?} of the image; it has {:?}\n{}",
                self.paths(sv),
                self.out
            )
        })
    }

    fn paths(&self, sv: &str) -> Vec<String> {
        self.inspect["listings"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["subvolume_path"] == sv))
            .and_then(|l| l["entries"].as_array())
            .map(|es| {
                es.iter()
                    .map(|e| e["path"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn warnings(&self) -> String {
        self.report["warnings"].to_string()
    }
}

/// Runs `rootbox build --json ARGS [-o OUTPUT]` as the test user and checks
/// what every build must hold: sources unchanged, TMPDIR empty, no mount
/// or process of the build left. Success → the image is inspected.
fn build(fx: &Fx, extra: &[OsString]) -> Built {
    let src_before = Snapshot::of(&fx.src());
    let out_dir = fx.out_dir();
    let out_before = listing(&out_dir);
    let mut cmd = rootbox(&fx.user);
    cmd.env("TMPDIR", fx.path("tmp")).arg("build").arg("--json");
    cmd.args(extra);
    if !fx.image().as_os_str().is_empty() {
        cmd.arg("-o").arg(fx.image());
    }
    let out = run(&mut cmd);
    let src_after = Snapshot::of(&fx.src());
    if let Some(d) = src_before.diff(&src_after) {
        panic!("the build modified its sources: {d}\n{out}");
    }
    let tmp_left = listing(&fx.path("tmp"));
    assert!(tmp_left.is_empty(), "left in TMPDIR: {tmp_left:?}\n{out}");
    let mounts = fx.mounts();
    assert!(
        mounts.is_empty(),
        "mounts of the build left: {mounts:#?}\n{out}"
    );
    let procs = fx.procs();
    assert!(
        procs.is_empty(),
        "processes of the build left: {procs:?}\n{out}"
    );

    if !out.status.success() {
        return Built {
            out,
            report: Value::Null,
            inspect: Value::Null,
        };
    }
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the --json report does not parse: {e}\n{out}"));
    let ins = run(rootbox(&fx.user)
        .arg("inspect")
        .arg("--json")
        .arg(fx.image()));
    ins.assert_success();
    let inspect: Value = serde_json::from_str(&ins.stdout).expect("inspect --json parses");
    let added: Vec<_> = listing(&out_dir).difference(&out_before).cloned().collect();
    let name = fx.image().file_name().unwrap().to_owned();
    assert!(
        added.iter().all(|a| *a == name),
        "besides the image, the build left {added:?} in the output directory\n{out}"
    );
    Built {
        out,
        report,
        inspect,
    }
}

/// What is at an output path: nothing, or the entry (inode, type, size,
/// mtime, content or symlink target).
fn output_state(p: &Path) -> Option<(u64, u32, u64, i64, i64, Vec<u8>)> {
    if p.as_os_str().is_empty() {
        return None;
    }
    let m = fs::symlink_metadata(p).ok()?;
    let content = if m.file_type().is_symlink() {
        fs::read_link(p)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else if m.is_file() {
        fs::read(p).unwrap_or_default()
    } else {
        Vec::new()
    };
    Some((
        m.ino(),
        m.mode(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        content,
    ))
}

/// The build must fail with every needle in its error, leaving the output
/// path as it was (nothing, or what was there: an earlier image, a
/// symlink, a directory) and the output directory unchanged.
#[track_caller]
fn expect_failure(fx: &Fx, extra: &[OsString], needles: &[&str]) -> Built {
    let out_dir = fx.out_dir();
    let before = listing(&out_dir);
    let output_before = output_state(&fx.image());
    let b = build(fx, extra);
    let out = &b.out;
    assert!(
        !out.status.success() && out.code().is_some_and(|c| c != 0),
        "the build should have failed:\n{out}"
    );
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "rootbox panicked:\n{out}"
    );
    let err = out
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("rootbox: error:") && !l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n");
    for n in needles {
        assert!(err.contains(n), "the error should mention {n:?}:\n{out}");
    }
    assert_eq!(
        output_state(&fx.image()),
        output_before,
        "a failed build changed what is at the output path {}\n{out}",
        fx.image().display()
    );
    assert_eq!(
        listing(&out_dir),
        before,
        "a failed build changed the output directory\n{out}"
    );
    b
}

#[track_caller]
fn expect_image(fx: &Fx, extra: &[OsString]) -> Built {
    let b = build(fx, extra);
    b.out.assert_success();
    assert_eq!(b.report["verified"], true, "{}", b.out);
    b
}

/// `btrfs restore` of the image into a fresh directory (content checks).
fn restore(fx: &Fx) -> PathBuf {
    let dst = fx.path(&format!("restored-{}", unique_marker("")));
    create_dirs_as(&fx.user, &dst);
    let out = run(cmd_as(&fx.user, "btrfs")
        .args(["restore", "-s", "-x", "-S", "-i"])
        .arg(fx.image())
        .arg(&dst));
    out.assert_success();
    dst
}

// ---- the table ---------------------------------------------------------------

type Setup = Box<dyn Fn(&Fx) -> Vec<OsString>>;
type Check = Box<dyn Fn(&Fx, &Built)>;

enum Expect {
    /// Fails; the error contains every needle.
    Fails(Vec<&'static str>),
    /// Succeeds; the image passes the check.
    Builds(Check),
}

struct Case {
    name: &'static str,
    setup: Setup,
    expect: Expect,
}

fn fails(
    name: &'static str,
    needles: &[&'static str],
    setup: impl Fn(&Fx) -> Vec<OsString> + 'static,
) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        expect: Expect::Fails(needles.to_vec()),
    }
}

fn builds(
    name: &'static str,
    setup: impl Fn(&Fx) -> Vec<OsString> + 'static,
    check: impl Fn(&Fx, &Built) + 'static,
) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        expect: Expect::Builds(Box::new(check)),
    }
}

/// Runs every case (each in its own fixture) and reports all failures.
fn run_table(cases: Vec<Case>) {
    let user = test_user();
    assert_unprivileged(&user);
    let _ = rootbox_bin();
    let mut failed = Vec::new();
    let n = cases.len();
    for case in cases {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let fx = Fx::new(&user);
            let a = (case.setup)(&fx);
            match &case.expect {
                Expect::Fails(needles) => {
                    expect_failure(&fx, &a, needles);
                }
                Expect::Builds(check) => {
                    let b = expect_image(&fx, &a);
                    check(&fx, &b);
                }
            }
        }));
        eprintln!(
            "case {:<45} {} in {:.2}s",
            case.name,
            if result.is_ok() { "ok" } else { "FAILED" },
            start.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("=== {} ===\n{msg}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} cases failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// The source snapshot notices every kind of change it promises to
/// (otherwise "sources unchanged" would pass vacuously).
#[test]
fn the_snapshot_sees_every_change() {
    let user = test_user();
    let fx = Fx::new(&user);
    fx.file("etc/f", "content");
    fx.symlink("etc/l", "target");
    let f = fx.root().join("etc/f");
    type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let changes: Vec<Change> = vec![
        ("content", Box::new(|| fs::write(&f, "contenT").unwrap())),
        (
            "mode",
            Box::new(|| fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap()),
        ),
        (
            "mtime",
            Box::new(|| {
                let t = fs::File::options().write(true).open(&f).unwrap();
                t.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
            }),
        ),
        (
            "xattr",
            Box::new(|| xattr::set(&f, "user.rootbox-test", b"1").unwrap()),
        ),
        (
            "symlink target",
            Box::new(|| {
                let l = fx.root().join("etc/l");
                fs::remove_file(&l).unwrap();
                std::os::unix::fs::symlink("other", &l).unwrap();
            }),
        ),
        (
            "new file",
            Box::new(|| fs::write(fx.root().join("etc/new"), "").unwrap()),
        ),
        (
            "owner",
            Box::new(|| {
                if is_root() {
                    std::os::unix::fs::lchown(&f, Some(STRANGER), None).unwrap();
                } else {
                    fs::write(&f, "owner").unwrap();
                }
            }),
        ),
    ];
    for (what, change) in changes {
        let before = Snapshot::of(&fx.src());
        change();
        let after = Snapshot::of(&fx.src());
        assert!(
            before.diff(&after).is_some(),
            "the snapshot missed a change of {what}"
        );
    }
}

// Hostile symlinks in the rootfs, the store and the output path.

// ---- symlinks --------------------------------------------------------------------

fn symlink_cases() -> Vec<Case> {
    vec![
        fails(
            "nix -> /etc where a subvolume is mounted",
            &[
                "nix is a symlink",
                "layout needs a directory there",
                "a subvolume is mounted there",
            ],
            |fx| {
                fx.file("etc/os-release", "x\n");
                fx.symlink("nix", "/etc");
                std_args(fx)
            },
        ),
        fails(
            "nix/store -> / where the store goes",
            &[
                "store is a symlink",
                "leads to a subvolume mount point or the store",
            ],
            |fx| {
                fx.symlink("nix/store", "/");
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                let mut a = rootfs_args(fx, &["@:/:default"]);
                a.extend(args(&["--closure", s(&ci), "--store-dir", s(&fx.store())]));
                a
            },
        ),
        fails(
            "var -> /tmp on the way to a deeper mount point",
            &["var is a symlink", "leads to a subvolume mount point"],
            |fx| {
                fx.symlink("var", "/tmp");
                rootfs_args(fx, &["@:/:default", "@log:/var/log"])
            },
        ),
        builds(
            "symlink loops stay symlinks",
            |fx| {
                fx.symlink("etc/a", "b");
                fx.symlink("etc/b", "a");
                fx.symlink("etc/self", "self");
                std_args(fx)
            },
            |_, b| {
                for (p, t) in [("etc/a", "b"), ("etc/b", "a"), ("etc/self", "self")] {
                    let e = b.expect("@", p);
                    assert_eq!(e["type"], "symlink", "{e}");
                    assert_eq!(e["symlink_target"], t, "{e}");
                }
            },
        ),
        builds(
            "symlinks pointing outside stay unresolved",
            |fx| {
                fx.symlink("etc/abs", "/etc/shadow");
                fx.symlink("etc/rel", "../../../../../../etc/shadow");
                fx.symlink("nix/var/up", "../../..");
                fx.symlink("etc/dangling", "/nonexistent/x");
                std_args(fx)
            },
            |_, b| {
                for (sv, p, t) in [
                    ("@", "etc/abs", "/etc/shadow"),
                    ("@", "etc/rel", "../../../../../../etc/shadow"),
                    ("@nix", "var/up", "../../.."),
                    ("@", "etc/dangling", "/nonexistent/x"),
                ] {
                    let e = b.expect(sv, p);
                    assert_eq!(e["type"], "symlink", "{e}");
                    assert_eq!(e["symlink_target"], t, "{e}");
                    assert_eq!((e["uid"].as_u64(), e["gid"].as_u64()), (Some(0), Some(0)));
                }
                // Nothing of the host's /etc came in through them.
                assert!(
                    b.entry("@", "etc/abs/x").is_none() && b.entry("@", "etc/shadow").is_none()
                );
            },
        ),
        builds(
            "a symlink to a directory is not followed",
            |fx| {
                fx.symlink("opt/hostetc", "/etc");
                fx.symlink("home", "/root");
                rootfs_args(fx, &["@:/:default"])
            },
            |_, b| {
                assert_eq!(b.expect("@", "opt/hostetc")["type"], "symlink");
                assert_eq!(b.expect("@", "home")["type"], "symlink");
                assert!(!b.paths("@").iter().any(|p| p.starts_with("opt/hostetc/")));
            },
        ),
        builds(
            "the rootfs given as a symlink to a directory",
            |fx| {
                fx.file("etc/hostname", "box\n");
                let link = fx.path("src/rootlink");
                symlink_as(&fx.user, "root", &link);
                args(&["--rootfs", s(&link), "--subvol", "@:/:default"])
            },
            |_, b| {
                assert_eq!(b.expect("@", "etc/hostname")["size"], 4);
            },
        ),
    ]
}

#[test]
fn symlinks() {
    run_table(symlink_cases());
}

// Hostile subvolume names and mount points.

// ---- subvolume names and mount points -------------------------------------------

fn layout_cases() -> Vec<Case> {
    let with = |svs: &'static [&'static str]| move |fx: &Fx| rootfs_args(fx, svs);
    vec![
        fails(
            "subvolume named ..",
            &["\"..\"", "is not a directory name"],
            with(&["..:/"]),
        ),
        fails(
            "subvolume named .",
            &["\".\"", "is not a directory name"],
            with(&[".:/"]),
        ),
        fails(
            "subvolume name with /",
            &["\"a/b\"", "contains '/'", "one path component"],
            with(&["a/b:/"]),
        ),
        fails(
            "subvolume names differing by a trailing slash",
            &["\"@nix/\"", "contains '/'"],
            with(&["@nix:/nix", "@nix/:/nix2"]),
        ),
        fails(
            "empty subvolume name",
            &["must not be empty", "NAME:MOUNTPOINT"],
            with(&[":/"]),
        ),
        fails(
            "empty subvolume name in a spec",
            &["subvolume name \"\" is empty"],
            |fx| fx.spec(r#"{"rootfs": "root", "subvolumes": [{"name": "", "mountpoint": "/"}]}"#),
        ),
        fails(
            "duplicate subvolume names",
            &["two subvolumes are named \"@\"", "unique"],
            with(&["@:/", "@:/home"]),
        ),
        fails(
            "subvolume name with a NUL",
            &["contains a NUL byte"],
            |fx| {
                fx.spec(r#"{"rootfs": "root", "subvolumes": [{"name": "a\u0000b", "mountpoint": "/"}]}"#)
            },
        ),
        fails(
            "duplicate mount points",
            &["\"@a\" and \"@b\" are both mounted at /home"],
            with(&["@:/", "@a:/home", "@b:/home"]),
        ),
        fails(
            "relative mount point",
            &["\"nix\" is not absolute", "\"/nix\""],
            with(&["@nix:nix"]),
        ),
        fails(
            "mount point with a trailing slash",
            &["\"/nix/\" is not normalized", "write \"/nix\""],
            with(&["@:/", "@nix:/nix/"]),
        ),
        fails(
            "mount point with .. inside",
            &["\"/nix/../home\" is not normalized", "write \"/home\""],
            with(&["@:/", "@h:/nix/../home"]),
        ),
        fails(
            "mount point above /",
            &["\"/..\" climbs above /"],
            with(&["@:/.."]),
        ),
        fails(
            "mount point with //",
            &["\"//nix\" is not normalized", "write \"/nix\""],
            with(&["@nix://nix"]),
        ),
        fails(
            "two default subvolumes",
            &["both marked default", "one default subvolume"],
            with(&["@:/:default", "@nix:/nix:default-ro"]),
        ),
        fails(
            "unknown subvolume type",
            &[
                "unknown subvolume type \"bogus\"",
                "rw, ro, default or default-ro",
            ],
            with(&["@:/:bogus"]),
        ),
        fails(
            "no subvolumes",
            &["no subvolumes given", "--subvol NAME:MOUNTPOINT"],
            |fx| args(&["--rootfs", s(&fx.root())]),
        ),
        builds(
            "nested mount points /, /nix, /nix/store",
            |fx| {
                fx.file("etc/x", "x");
                fx.file("nix/var/y", "y");
                fx.file("nix/store/z", "z");
                rootfs_args(fx, &["@:/:default", "@nix:/nix", "@store:/nix/store"])
            },
            |_, b| {
                b.expect("@", "etc/x");
                assert!(b.entry("@", "nix/var/y").is_none() && b.entry("@", "nix/store").is_none());
                b.expect("@nix", "var/y");
                assert_eq!(
                    b.expect("@nix", "store")["size"],
                    0,
                    "masked: an empty directory"
                );
                b.expect("@store", "z");
            },
        ),
    ]
}

#[test]
fn subvolume_layouts() {
    run_table(layout_cases());
}

// Hostile output paths.

// ---- the output path --------------------------------------------------------------

fn output_cases() -> Vec<Case> {
    vec![
        fails(
            "output inside the rootfs",
            &["is inside", "staged into the image", "write it elsewhere"],
            |fx| {
                fx.mkdir("boot");
                *fx.output.borrow_mut() = fx.root().join("boot/image.img");
                std_args(fx)
            },
        ),
        fails(
            "output inside a store path",
            &["is inside", "hello", "would contain itself"],
            |fx| {
                fx.file("etc/x", "x");
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                *fx.output.borrow_mut() = p.join("bin/image.img");
                let mut a = std_args(fx);
                a.extend(args(&["--closure", s(&ci), "--store-dir", s(&fx.store())]));
                a
            },
        ),
        fails(
            "output is a directory",
            &["is a directory", "path of the image file"],
            |fx| {
                create_dirs_as(&fx.user, &fx.path("out/image.img"));
                std_args(fx)
            },
        ),
        fails(
            "existing image without --force",
            &["exists: use --force"],
            |fx| {
                write_as(&fx.user, &fx.image(), "the previous image");
                fx.file("etc/x", "x");
                std_args(fx)
            },
        ),
        fails(
            "a dangling symlink at the output without --force",
            &["exists: use --force"],
            |fx| {
                symlink_as(&fx.user, "/nonexistent-target", &fx.image());
                std_args(fx)
            },
        ),
        builds(
            "existing image with --force is replaced",
            |fx| {
                write_as(&fx.user, &fx.image(), "the previous image");
                fx.file("etc/x", "new");
                let mut a = std_args(fx);
                a.push("--force".into());
                a
            },
            |fx, b| {
                assert_eq!(b.expect("@", "etc/x")["size"], 3);
                assert!(fs::metadata(fx.image()).unwrap().len() > 1 << 20);
            },
        ),
        builds(
            "--force replaces a symlink, not its target",
            |fx| {
                let victim = fx.path("victim");
                write_as(&fx.user, &victim, "keep me");
                symlink_as(&fx.user, &victim, &fx.image());
                fx.file("etc/x", "x");
                let mut a = std_args(fx);
                a.push("--force".into());
                a
            },
            |fx, _| {
                assert_eq!(fs::read(fx.path("victim")).unwrap(), b"keep me");
                assert!(fs::symlink_metadata(fx.image()).unwrap().is_file());
            },
        ),
        fails(
            "output directory missing",
            &["does-not-exist", "create it first"],
            |fx| {
                *fx.output.borrow_mut() = fx.path("out/does-not-exist/image.img");
                std_args(fx)
            },
        ),
        fails("no output given", &["no output given", "-o IMAGE"], |fx| {
            *fx.output.borrow_mut() = PathBuf::new();
            std_args(fx)
        }),
        fails(
            "output on a full filesystem",
            &[
                "no space left for the image",
                "/full",
                "bytes free",
                "write the image elsewhere",
            ],
            |fx| {
                assert!(fx.tmpfs("full", "8m"), "needs root to mount a small tmpfs");
                let full = fx.path("full");
                // 24 MiB of incompressible data.
                let mut data = vec![0u8; 24 << 20];
                let mut x: u64 = 0x9e3779b97f4a7c15;
                for c in data.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
                }
                write_as(&fx.user, &fx.root().join("big"), data);
                *fx.output.borrow_mut() = full.join("image.img");
                std_args(fx)
            },
        ),
    ]
}

#[test]
fn output_paths() {
    let mut cases = output_cases();
    if !is_root() {
        eprintln!("SKIPPED: the full-filesystem case mounts a tmpfs: run as root (CI does)");
        cases.retain(|c| c.name != "output on a full filesystem");
    }
    run_table(cases);
}

// Hostile rootfs inputs: unreadable files, files of ids the namespace
// does not map, odd roots.

// ---- the rootfs ----------------------------------------------------------------------

fn rootfs_cases() -> Vec<Case> {
    vec![
        fails(
            "missing rootfs",
            &[
                "rootfs",
                "no-such-dir",
                "No such file",
                "give an existing directory",
            ],
            |fx| {
                args(&[
                    "--rootfs",
                    s(&fx.path("src/no-such-dir")),
                    "--subvol",
                    "@:/",
                ])
            },
        ),
        fails(
            "rootfs is a file",
            &["rootfs", "is not a directory", "--rootfs"],
            |fx| {
                let f = fx.path("src/rootfile");
                write_as(&fx.user, &f, "not a dir");
                args(&["--rootfs", s(&f), "--subvol", "@:/"])
            },
        ),
        fails(
            "neither rootfs nor closure",
            &["nothing to put in the image", "--rootfs DIR"],
            |_| args(&["--subvol", "@:/"]),
        ),
        // The test user owns the file: in the namespace it is root's, and
        // root reads a mode-000 file (CAP_DAC_OVERRIDE applies to ids the
        // namespace maps). Correct: the image keeps the file, its content
        // and its mode 000 (as /etc/shadow is on some distributions).
        builds(
            "a mode-000 file of the caller",
            |fx| {
                fx.file("etc/shadow", "secret\n");
                fs::set_permissions(
                    fx.root().join("etc/shadow"),
                    fs::Permissions::from_mode(0o000),
                )
                .unwrap();
                std_args(fx)
            },
            |fx, b| {
                let e = b.expect("@", "etc/shadow");
                assert_eq!(e["mode"].as_u64().unwrap() & 0o7777, 0, "{e}");
                assert_eq!(e["size"], 7);
                let r = restore(fx);
                let p = r.join("@/etc/shadow");
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).ok();
                assert_eq!(fs::read(&p).unwrap(), b"secret\n");
            },
        ),
        // Likewise a mode-000 directory of the caller: the plan is made
        // inside the namespace, where root reads it; the image keeps it,
        // its mode and its content.
        builds(
            "a mode-000 directory of the caller",
            |fx| {
                fx.file("locked/inner", "x");
                fs::set_permissions(fx.root().join("locked"), fs::Permissions::from_mode(0o000))
                    .unwrap();
                std_args(fx)
            },
            |_, b| {
                let d = b.expect("@", "locked");
                assert_eq!(d["mode"].as_u64().unwrap() & 0o7777, 0, "{d}");
                assert_eq!(b.expect("@", "locked/inner")["size"], 1);
            },
        ),
        fails(
            "a 0600 file owned by another uid",
            &[
                "cannot read",
                "src/root/etc/private",
                "Permission denied",
                "readable to you",
            ],
            |fx| {
                fx.file("etc/private", "not yours\n");
                stranger_owns(fx, "etc/private", 0o600);
                std_args(fx)
            },
        ),
        fails(
            "a 0700 directory owned by another uid",
            &["cannot read directory", "var/secret", "Permission denied"],
            |fx| {
                fx.file("var/secret/f", "x");
                stranger_owns(fx, "var/secret/f", 0o644);
                stranger_owns(fx, "var/secret", 0o700);
                std_args(fx)
            },
        ),
        builds(
            "a readable file owned by another uid becomes root's",
            |fx| {
                fx.file("etc/motd", "hello\n");
                stranger_owns(fx, "etc/motd", 0o644);
                std_args(fx)
            },
            |_, b| {
                let e = b.expect("@", "etc/motd");
                assert_eq!(
                    (e["uid"].as_u64(), e["gid"].as_u64()),
                    (Some(0), Some(0)),
                    "{e}"
                );
                assert_eq!(e["size"], 6);
            },
        ),
    ]
}

/// chown STRANGER:STRANGER and chmod `mode` (root only; the case fails
/// with a clear message otherwise).
fn stranger_owns(fx: &Fx, rel: &str, mode: u32) {
    assert!(is_root(), "this case needs root to chown to another uid");
    let p = fx.root().join(rel);
    std::os::unix::fs::lchown(&p, Some(STRANGER), Some(STRANGER)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn rootfs_inputs() {
    if !is_root() {
        skip!("the rootfs cases chown files to other uids: run as root (CI does)");
    }
    run_table(rootfs_cases());
}

// Hostile closures: store paths and closureInfo files.

// ---- closures ------------------------------------------------------------------------

fn closure_args(fx: &Fx, ci: &Path) -> Vec<OsString> {
    let mut a = std_args(fx);
    a.extend(args(&["--closure", s(ci), "--store-dir", s(&fx.store())]));
    a
}

fn closure_cases() -> Vec<Case> {
    vec![
        fails(
            "a store path that does not exist",
            &[
                "store-paths:2:",
                "-gone does not exist",
                "realise the closure",
            ],
            |fx| {
                let p = fx.store_path("hello");
                let gone = fx.store().join(format!("{HASH}-gone"));
                let ci = fx.closure(&[s(&p).into(), s(&gone).into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a path outside the store",
            &["store-paths:1:", "not a store path", "storeDir"],
            |fx| {
                fx.store_path("hello");
                let ci = fx.closure(&["/etc".into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a file inside a store path",
            &["store-paths:1:", "not a file inside one"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p.join("bin/hello")).into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a store path listed twice",
            &["store-paths:3:", "listed twice (first on line 1)"],
            |fx| {
                let p = fx.store_path("hello");
                let q = fx.store_path("world");
                let ci = fx.closure(&[s(&p).into(), s(&q).into(), s(&p).into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a store path not normalized",
            &["store-paths:1:", "not a normalized path"],
            |fx| {
                let p = fx.store_path("hello");
                let odd = format!("{}/./{HASH}-hello", s(&fx.store()));
                let _ = p;
                let ci = fx.closure(&[odd], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a relative store path",
            &["store-paths:1:", "not an absolute path"],
            |fx| {
                fx.store_path("hello");
                let ci = fx.closure(&[format!("{HASH}-hello")], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a registration that does not match store-paths",
            &[
                "does not match",
                "registered but not listed",
                "-world",
                "same closureInfo",
            ],
            |fx| {
                let p = fx.store_path("hello");
                let q = fx.store_path("world");
                let ci = fx.closure(&[s(&p).into()], Some(&[s(&p).into(), s(&q).into()]));
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a truncated registration",
            &["registration:", "ends inside the record", "reference count"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                write_as(
                    &fx.user,
                    &ci.join("registration"),
                    format!("{}\nsha256:00\n12\n\n", s(&p)),
                );
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a total-nar-size that is no number",
            &["total-nar-size", "expected a number of bytes"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], Some(&[s(&p).into()]));
                write_as(&fx.user, &ci.join("total-nar-size"), "lots\n");
                closure_args(fx, &ci)
            },
        ),
        fails("a missing closure", &["cannot read", "no-closure"], |fx| {
            closure_args(fx, &fx.path("src/no-closure"))
        }),
        fails(
            "a closure with no subvolume for the store",
            &["no subvolume holds /nix/store", "--subvol @nix:/nix"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                let mut a = rootfs_args(fx, &["@home:/home"]);
                a.extend(args(&["--closure", s(&ci), "--store-dir", s(&fx.store())]));
                a
            },
        ),
        builds(
            "an empty closure: a warning, an image",
            |fx| {
                fx.file("etc/x", "x");
                let ci = fx.closure(&[], Some(&[]));
                closure_args(fx, &ci)
            },
            |_, b| {
                assert!(b.warnings().contains("the closure is empty"), "{}", b.out);
                assert_eq!(b.report["store_paths"], 0);
                assert!(b.out.stderr.contains("the closure is empty"), "{}", b.out);
            },
        ),
        builds(
            "a closure with registration",
            |fx| {
                let p = fx.store_path("hello");
                let q = fx.store_path("world");
                let ci = fx.closure(
                    &[s(&p).into(), s(&q).into()],
                    Some(&[s(&q).into(), s(&p).into()]),
                );
                closure_args(fx, &ci)
            },
            |_, b| {
                b.expect("@nix", &format!("store/{HASH}-hello/bin/hello"));
                b.expect("@nix", &format!("store/{HASH}-world/bin/world"));
                assert_eq!(b.report["registration"], "/nix-path-registration");
                b.expect("@", "nix-path-registration");
            },
        ),
    ]
}

#[test]
fn closures() {
    run_table(closure_cases());
}

// Special files (FIFOs, sockets, device nodes), sparse files, hard links
// across subvolumes, long and non-UTF-8 names, deep and big trees.

// ---- special files, big and odd trees ------------------------------------------------

fn special_file_cases() -> Vec<Case> {
    vec![
        // FIFOs and sockets of the caller are bound into the staging tree
        // and recorded as such. mkfs.btrfs 6.14 records device nodes with
        // rdev 0; rootbox rewrites the real numbers into the image after
        // mkfs. A node owned by an id the namespace does not map either
        // reaches the image the same way or is left out with a warning
        // naming it.
        builds(
            "FIFOs, sockets and device nodes",
            |fx| {
                fx.mkdir("dev");
                let fifo = fx.root().join("dev/fifo");
                nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o620))
                    .unwrap();
                fs::set_permissions(&fifo, fs::Permissions::from_mode(0o620)).unwrap();
                give_to(&fx.user, &fifo);
                let sock = fx.root().join("dev/sock");
                let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
                drop(l);
                give_to(&fx.user, &sock);
                if is_root() {
                    for (name, owner) in [("null", Some(&fx.user)), ("rootnull", None)] {
                        let p = fx.root().join("dev").join(name);
                        nix::sys::stat::mknod(
                            &p,
                            nix::sys::stat::SFlag::S_IFCHR,
                            nix::sys::stat::Mode::from_bits_truncate(0o666),
                            nix::sys::stat::makedev(1, 3),
                        )
                        .unwrap();
                        if let Some(u) = owner {
                            give_to(u, &p);
                        }
                    }
                }
                std_args(fx)
            },
            |_, b| {
                assert_eq!(b.expect("@", "dev/fifo")["type"], "fifo");
                assert_eq!(
                    b.expect("@", "dev/fifo")["mode"].as_u64().unwrap() & 0o7777,
                    0o620
                );
                assert_eq!(b.expect("@", "dev/sock")["type"], "socket");
                if is_root() {
                    // makedev(1, 3) as btrfs stores it (major << 20 | minor).
                    let want = (1u64 << 20) | 3;
                    let null = b.expect("@", "dev/null");
                    assert_eq!(null["type"], "chardev", "{null}");
                    assert_eq!(null["rdev"], want, "{null}");
                    match b.entry("@", "dev/rootnull") {
                        Some(n) => {
                            assert_eq!(n["type"], "chardev", "{n}");
                            assert_eq!(n["rdev"], want, "{n}");
                        }
                        None => {
                            let w = b.warnings();
                            assert!(w.contains("dev/rootnull") && w.contains("left out"), "{w}");
                        }
                    }
                }
            },
        ),
        // mkfs.btrfs 6.14 writes holes as data (hole detection came to
        // btrfs-progs' devel branch in 2026, kdave/btrfs-progs#1097):
        // rootbox warns, and with compression the image stays small.
        builds(
            "a 1 GiB sparse file",
            |fx| {
                let p = fx.root().join("var/lib/sparse.img");
                create_dirs_as(&fx.user, p.parent().unwrap());
                let f = fs::File::create(&p).unwrap();
                f.set_len(1 << 30).unwrap();
                use std::os::unix::fs::FileExt;
                f.write_all_at(b"tail", (1 << 30) - 4).unwrap();
                give_to(&fx.user, &p);
                let mut a = std_args(fx);
                a.extend(args(&["--compress", "zstd:1"]));
                a
            },
            |_, b| {
                let e = b.expect("@", "var/lib/sparse.img");
                assert_eq!(e["size"], 1u64 << 30, "{e}");
                let size = b.report["size_bytes"].as_u64().unwrap();
                assert!(
                    size < 400 << 20,
                    "a sparse 1 GiB file made a {size}-byte image"
                );
                assert!(
                    b.warnings().contains("sparse.img") && b.warnings().contains("sparse"),
                    "no warning about the sparse file: {}",
                    b.warnings()
                );
            },
        ),
        // Two subvolumes are two filesystem trees: a hard link cannot span
        // them. Each side gets its own file with the content.
        builds(
            "hard links spanning two subvolumes",
            |fx| {
                fx.file("etc/linked", "shared content\n");
                fx.mkdir("nix");
                fs::hard_link(fx.root().join("etc/linked"), fx.root().join("nix/linked")).unwrap();
                fs::hard_link(fx.root().join("etc/linked"), fx.root().join("etc/linked2")).unwrap();
                std_args(fx)
            },
            |fx, b| {
                b.expect("@", "etc/linked");
                b.expect("@nix", "linked");
                let r = restore(fx);
                for p in ["@/etc/linked", "@/etc/linked2", "@nix/linked"] {
                    assert_eq!(fs::read(r.join(p)).unwrap(), b"shared content\n", "{p}");
                }
            },
        ),
        builds(
            "255-byte names",
            |fx| {
                fx.file(&format!("etc/{}", "n".repeat(255)), "long");
                fx.mkdir(&"d".repeat(255));
                fx.symlink(&format!("{}/l", "d".repeat(255)), &"t".repeat(255));
                std_args(fx)
            },
            |_, b| {
                assert_eq!(
                    b.expect("@", &format!("etc/{}", "n".repeat(255)))["size"],
                    4
                );
                let l = b.expect("@", &format!("{}/l", "d".repeat(255)));
                assert_eq!(l["symlink_target"], "t".repeat(255));
            },
        ),
        builds(
            "non-UTF-8 names",
            |fx| {
                let etc = fx.root().join("etc");
                create_dirs_as(&fx.user, &etc);
                let bad = etc.join(OsStr::from_bytes(b"caf\xe9"));
                write_as(&fx.user, &bad, "latin1");
                let d = fx.root().join(OsStr::from_bytes(b"\xff\xfe dir"));
                create_dirs_as(&fx.user, &d);
                write_as(&fx.user, &d.join("f"), "x");
                std_args(fx)
            },
            |_, b| {
                assert_eq!(b.expect("@", "etc/caf\\xe9")["size"], 6);
                b.expect("@", "\\xff\\xfe dir/f");
            },
        ),
        builds(
            "a tree 1,000 directories deep",
            |fx| {
                fx.tmpfs("src/root", "64m");
                deep_tree(fx, 1000);
                rootfs_args(fx, &["@:/"])
            },
            |_, b| {
                let leaf = format!("{}leaf", "d/".repeat(1000));
                assert_eq!(b.expect("@", &leaf)["size"], 4);
            },
        ),
        fails(
            "a tree 2,000 directories deep",
            &["nested more than 1024 directories deep", "refuses"],
            |fx| {
                fx.tmpfs("src/root", "64m");
                deep_tree(fx, 2000);
                rootfs_args(fx, &["@:/"])
            },
        ),
        fails(
            "a tree 10,000 directories deep",
            &["nested more than 1024 directories deep", "refuses"],
            |fx| {
                assert!(
                    nofile_limit() > 10_100,
                    "needs RLIMIT_NOFILE > 10100 to walk the tree"
                );
                fx.tmpfs("src/root", "128m");
                deep_tree(fx, 10_000);
                rootfs_args(fx, &["@:/"])
            },
        ),
        builds(
            "100,000 tiny files",
            |fx| {
                // On a tmpfs: 100k creates on the test machines' ext4 take 25 s.
                fx.tmpfs("src/root", "512m");
                many_files(fx, 100_000);
                rootfs_args(fx, &["@:/"])
            },
            |_, b| {
                assert_eq!(b.report["subvolumes"][0]["entries"], 100_000 + 100 + 1);
                b.expect("@", "d99/f99999");
            },
        ),
    ]
}

/// `root/d/d/…/d/leaf` (`depth` directories), made through descriptors:
/// deeper than PATH_MAX allows. Split into short chains before the
/// fixture is removed (remove_dir_all recurses with one descriptor per
/// level).
fn deep_tree(fx: &Fx, depth: usize) {
    use std::io::Write;
    use std::os::unix::fs::{fchown, DirBuilderExt, OpenOptionsExt};
    raise_nofile_limit();
    let (uid, gid) = (fx.user.uid, fx.user.gid);
    let mut cur = fs::File::open(fx.root()).unwrap();
    for _ in 0..depth {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(in_dir(&cur, "d"))
            .expect("mkdirat");
        let next = fs::File::open(in_dir(&cur, "d")).expect("openat");
        fchown(&next, Some(uid), Some(gid)).ok();
        cur = next;
    }
    let mut leaf = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(in_dir(&cur, "leaf"))
        .expect("creating the leaf");
    fchown(&leaf, Some(uid), Some(gid)).ok();
    leaf.write_all(b"leaf").expect("write");
    // Cleanup: move every 400th level up to the fixture's top directory.
    let top = fx.path("deep-chunks");
    let root = fx.root();
    fx.cleanup.borrow_mut().push(Box::new(move || {
        let _ = fs::create_dir(&top);
        let topdir = fs::File::open(&top).unwrap();
        let mut n = 0;
        loop {
            let mut cur = match fs::File::open(if n == 0 {
                root.clone()
            } else {
                top.join(n.to_string())
            }) {
                Ok(f) => f,
                Err(_) => break,
            };
            let mut moved = false;
            for level in 0..400 {
                let Ok(next) = fs::File::open(in_dir(&cur, "d")) else {
                    break;
                };
                if level == 399 {
                    n += 1;
                    let _ = fs::rename(in_dir(&cur, "d"), in_dir(&topdir, &n.to_string()));
                    moved = true;
                    break;
                }
                cur = next;
            }
            if !moved {
                break;
            }
        }
    }));
}

/// `NAME` in the open directory `dir`, however deep it is: a path through
/// `/proc/self/fd` stays short where the full path would exceed PATH_MAX.
fn in_dir(dir: &fs::File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// `n` empty files in 100 directories `d0..d99` (file `fI` in `d{I/1000}`).
fn many_files(fx: &Fx, n: usize) {
    let per = n.div_ceil(100);
    for d in 0..100 {
        let dir = fx.root().join(format!("d{d}"));
        create_dirs_as(&fx.user, &dir);
        for i in d * per..((d + 1) * per).min(n) {
            let p = dir.join(format!("f{i}"));
            fs::File::create(&p).unwrap();
            if is_root() {
                std::os::unix::fs::lchown(&p, Some(fx.user.uid), Some(fx.user.gid)).unwrap();
            }
        }
    }
}

#[test]
fn special_files_and_big_trees() {
    run_table(special_file_cases());
}

/// One million files: not in CI (`ROOTBOX_HUGE=1` runs it). Prints the
/// time; measure rootbox's peak memory by hand with /usr/bin/time -v.
#[test]
fn a_million_files() {
    if std::env::var_os("ROOTBOX_HUGE").is_none() {
        skip!("set ROOTBOX_HUGE=1 to build an image of a million files");
    }
    let user = test_user();
    let fx = Fx::new(&user);
    fx.tmpfs("src/root", "4g");
    let t = Instant::now();
    many_files(&fx, 1_000_000);
    eprintln!("made 1M files in {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let out = run(rootbox(&user)
        .env("TMPDIR", fx.path("tmp"))
        .args(["build", "--json", "--subvol", "@:/", "--rootfs"])
        .arg(fx.root())
        .arg("-o")
        .arg(fx.image()));
    out.assert_success();
    eprintln!("built in {:.1}s", t.elapsed().as_secs_f64());
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["subvolumes"][0]["entries"], 1_000_000 + 100 + 1);
    eprintln!("timings: {}", r["timings"]);
}

// Malformed specs and flags.

// ---- malformed specs and flags ----------------------------------------------------

fn spec_cases() -> Vec<Case> {
    let spec = |json: &'static str| move |fx: &Fx| fx.spec(json);
    let flags = |extra: &'static [&'static str]| {
        move |fx: &Fx| {
            let mut a = std_args(fx);
            a.extend(args(extra));
            a
        }
    };
    vec![
        fails(
            "spec: wrong type",
            &[
                "spec.json:1:",
                "label: invalid type: integer `5`, expected a string",
            ],
            spec(
                r#"{"label": 5, "rootfs": "root", "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: subvolumes not a list",
            &["spec.json:1:", "subvolumes: invalid type"],
            spec(r#"{"rootfs": "root", "subvolumes": {"@": "/"}}"#),
        ),
        fails(
            "spec: unknown field",
            &["unknown field `lable`", "expected one of"],
            spec(r#"{"lable": "x", "rootfs": "root"}"#),
        ),
        fails(
            "spec: unknown field in a subvolume",
            &["subvolumes[0]", "unknown field `mountPoint`"],
            spec(r#"{"rootfs": "root", "subvolumes": [{"name": "@", "mountPoint": "/"}]}"#),
        ),
        fails(
            "spec: truncated JSON",
            &["spec.json:", "unexpected end of input", "truncated"],
            spec(r#"{"rootfs": "root", "subvolumes": [{"name": "@", "#),
        ),
        fails("spec: empty file", &["spec.json:", "truncated"], spec("")),
        fails(
            "spec: not an object",
            &["spec.json:1:1:", "expected a JSON object", "found a list"],
            spec(r#"[{"rootfs": "root"}]"#),
        ),
        fails(
            "spec: huge number for a size",
            &["size", "too large"],
            spec(
                r#"{"rootfs": "root", "size": "99999999999999999999T", "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: a size beyond u64",
            &["spec.json:1:", "size"],
            spec(
                r#"{"rootfs": "root", "size": 99999999999999999999999, "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: negative size",
            &["size", "negative"],
            spec(
                r#"{"rootfs": "root", "size": -1, "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: negative headroom string",
            &["headroom", "negative"],
            spec(
                r#"{"rootfs": "root", "headroom": "-5M", "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: fractional byte count",
            &["headroom", "whole count"],
            spec(
                r#"{"rootfs": "root", "headroom": 1.5, "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: bad UUID",
            &["uuid", "8-4-4-4-12"],
            spec(
                r#"{"rootfs": "root", "uuid": "4444-not-a-uuid", "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: unknown compression",
            &["compress", "unknown compression \"brotli\"", "zstd[:1..15]"],
            spec(
                r#"{"rootfs": "root", "compress": "brotli", "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: unknown filesystem",
            &["filesystem", "`btrfs`"],
            spec(r#"{"filesystem": "ext4", "rootfs": "root"}"#),
        ),
        fails(
            "spec: label longer than 255 bytes",
            &["label", "at most 255"],
            |fx| {
                fx.spec(&format!(r#"{{"rootfs": "root", "label": "{}", "subvolumes": [{{"name": "@", "mountpoint": "/"}}]}}"#, "l".repeat(256)))
            },
        ),
        fails(
            "spec: subvolumes and fileSystems both",
            &["both"],
            spec(
                r#"{"rootfs": "root", "fileSystems": "fs.json", "subvolumes": [{"name": "@", "mountpoint": "/"}]}"#,
            ),
        ),
        fails(
            "spec: not UTF-8",
            &["cannot read spec", "spec.json"],
            |fx| {
                let p = fx.path("src/spec.json");
                write_as(&fx.user, &p, b"{\"label\": \"\xff\"}");
                args(&["--spec", s(&p)])
            },
        ),
        fails(
            "spec: a directory",
            &["cannot read spec", "src/root"],
            |fx| args(&["--spec", s(&fx.root())]),
        ),
        fails(
            "flag: bad --uuid",
            &["--uuid", "8-4-4-4-12"],
            flags(&["--uuid", "zz"]),
        ),
        fails(
            "flag: negative --size",
            &["--size", "negative"],
            flags(&["--size=-5G"]),
        ),
        fails(
            "flag: unknown --compress",
            &["--compress", "unknown compression"],
            flags(&["--compress", "lz4"]),
        ),
        fails(
            "flag: --size too small for the content",
            &[
                "--size 1M is too small",
                "mkfs.btrfs needed",
                "use --size auto",
            ],
            |fx| {
                write_as(&fx.user, &fx.root().join("data"), vec![7u8; 4 << 20]);
                let mut a = std_args(fx);
                a.extend(args(&["--size", "1M"]));
                a
            },
        ),
    ]
}

#[test]
fn malformed_specs() {
    run_table(spec_cases());
}

// Hostile NixOS `fileSystems` JSON.

// ---- NixOS fileSystems ------------------------------------------------------------

fn nixos_cases() -> Vec<Case> {
    let fsj = |json: &'static str| {
        move |fx: &Fx| {
            let p = fx.path("src/fs.json");
            write_as(&fx.user, &p, json);
            args(&["--rootfs", s(&fx.root()), "--file-systems", s(&p)])
        }
    };
    vec![
        fails(
            "fileSystems: truncated",
            &["fs.json", "1:"],
            fsj(r#"{"/": {"fsType": "btrfs""#),
        ),
        fails(
            "fileSystems: options not a list",
            &["fs.json", "options", "invalid type"],
            fsj(r#"{"/": {"device": "/dev/vda", "fsType": "btrfs", "options": "subvol=@"}}"#),
        ),
        fails(
            "fileSystems: a number instead of an object",
            &["fs.json", "invalid type"],
            fsj("42"),
        ),
        fails(
            "fileSystems: subvolid",
            &["subvolid=256", "use subvol=NAME"],
            fsj(r#"{"/": {"device": "/dev/vda", "fsType": "btrfs", "options": ["subvolid=256"]}}"#),
        ),
        fails(
            "fileSystems: nested subvol",
            &["subvol=a/b is nested", "top level"],
            fsj(r#"{"/": {"device": "/dev/vda", "fsType": "btrfs", "options": ["subvol=a/b"]}}"#),
        ),
        fails(
            "fileSystems: / is the top level",
            &["mounts the top level", "subvol=@"],
            fsj(r#"{"/": {"device": "/dev/vda", "fsType": "btrfs", "options": []}}"#),
        ),
        fails(
            "fileSystems: relative mount point",
            &["\"nix\"", "not absolute"],
            fsj(
                r#"{"nix": {"device": "/dev/vda", "fsType": "btrfs", "options": ["subvol=@nix"]}}"#,
            ),
        ),
        fails(
            "fileSystems: no btrfs",
            &["no btrfs entry"],
            fsj(r#"{"/": {"device": "/dev/vda", "fsType": "ext4"}}"#),
        ),
        fails(
            "fileSystems: btrfs on several devices",
            &["several devices", "--label or --uuid"],
            fsj(
                r#"{"/": {"device": "/dev/vda", "fsType": "btrfs", "options": ["subvol=@"]}, "/nix": {"device": "/dev/vdb", "fsType": "btrfs", "options": ["subvol=@nix"]}}"#,
            ),
        ),
        fails(
            "fileSystems: duplicate subvolume",
            &["two subvolumes are named \"@\""],
            fsj(
                r#"[{"mountPoint": "/", "device": "/dev/vda", "fsType": "btrfs", "options": ["subvol=@"]}, {"mountPoint": "/home", "device": "/dev/vda", "fsType": "btrfs", "options": ["subvol=@"]}]"#,
            ),
        ),
        fails(
            "fileSystems: missing file",
            &["reading NixOS fileSystems", "no-fs.json"],
            |fx| {
                args(&[
                    "--rootfs",
                    s(&fx.root()),
                    "--file-systems",
                    s(&fx.path("src/no-fs.json")),
                ])
            },
        ),
        builds(
            "fileSystems: tmpfs / with @nix and @persist",
            move |fx| {
                fx.file("nix/x", "x");
                fx.file("persist/y", "y");
                fx.file("etc/z", "z");
                fsj(
                    r#"{"/": {"device": "none", "fsType": "tmpfs"}, "/nix": {"device": "/dev/disk/by-label/nixos", "fsType": "btrfs", "options": ["subvol=@nix", "noatime"]}, "/persist": {"device": "/dev/disk/by-label/nixos", "fsType": "btrfs", "options": ["subvol=@persist"]}}"#,
                )(fx)
            },
            |_, b| {
                b.expect("@nix", "x");
                b.expect("@persist", "y");
                assert_eq!(b.report["label"], "nixos");
                assert!(
                    b.report["left_out"].to_string().contains("etc"),
                    "{}",
                    b.report
                );
            },
        ),
    ]
}

#[test]
fn nixos_file_systems() {
    run_table(nixos_cases());
}
