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
//! The cases are grouped in tables, one file and one `#[test]` per table
//! (`symlinks`, `layouts`, `outputs`, `rootfs`, `closures`,
//! `special_files`, `specs`, `nixos`); a table runs every case and reports
//! all failures together. This file holds what the tables share: the
//! build and its checks, and the table runner.

#![forbid(unsafe_code)]

#[path = "../common/mod.rs"]
mod common;

mod closures;
mod layouts;
mod nixos;
mod outputs;
mod rootfs;
mod special_files;
mod specs;
mod symlinks;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use serde_json::Value;

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
