//! Integration tests of `rootbox build`: the real binary, run as an
//! unprivileged user, producing real btrfs images.
//!
//! Every test starts with [`setup`] (the unprivileged user, checked). The
//! images are read back twice: with `rootbox inspect --json` as that user
//! ([`Inspected`]: no root, no mount), and — when the tests run as root, as
//! in CI — by loop-mounting them read-only ([`Mounted`], unmounted even
//! when the test panics) and looking with `find -printf`, std::fs, getcap,
//! `btrfs subvolume list`, plus `btrfs check` on the unmounted image.
//!
//! Inputs live in per-test directories under /tmp owned by the test user
//! ([`tempdir_for`]); files owned by other ids are made by the root
//! harness. NixOS `fileSystems` fixtures are in tests/fixtures/build/.
//!
//! This file holds the inputs and readers the topics share; the tests are
//! in one file per topic:
//!
//! - `round_trip`: a rootfs and a closure reach the image owned by root,
//!   file capabilities, the impermanence layout;
//! - `nixos`: layouts read from a NixOS `fileSystems` JSON;
//! - `owners`: ids the namespace does not map, `--map subid|single|subrange`,
//!   the ownership manifest, device nodes, `--no-userns`;
//! - `errors`: bad input is refused and leaves nothing; `--force`;
//! - `json`: the `--json` result;
//! - `reproducible`: two builds of two copies are byte-identical;
//! - `mkfs_features`: `--reflink`, subvolume inode flags and the features
//!   mkfs enabled, with the mkfs.btrfs on PATH (6.14 refuses, 7.3 does).

#![forbid(unsafe_code)]

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod json;
mod mkfs_features;
mod nixos;
mod owners;
mod reproducible;
mod round_trip;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

// ---- files and directories --------------------------------------------------

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

/// `mkdir -p` with every directory it creates owned by `user`, mode 0755
/// (whatever the umask of the test process).
fn dir_as(user: &User, p: &Path) {
    if p.is_dir() {
        return;
    }
    if let Some(parent) = p.parent() {
        dir_as(user, parent);
    }
    create_dirs_as(user, p);
    chmod(p, 0o755);
}

/// A file owned by `user` with `mode` (set after the chown, which would
/// clear set-id bits).
fn file_as(user: &User, p: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    dir_as(user, p.parent().expect("a parent"));
    write_as(user, p, contents);
    chmod(p, mode);
}

/// A file owned by `uid:gid` (the root harness chowns it).
fn file_owned(p: &Path, contents: impl AsRef<[u8]>, mode: u32, uid: u32, gid: u32) {
    fs::write(p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", p.display()));
    chmod(p, mode);
}

fn dir_owned(p: &Path, mode: u32, uid: u32, gid: u32) {
    fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", p.display()));
    chmod(p, mode);
}

/// The names in `dir` (hidden ones included), sorted.
fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A failed build left nothing at `output`, and its directory holds
/// exactly `expected` (no temporary image, no scratch directory).
#[track_caller]
fn assert_nothing_written(output: &Path, expected: &[&str], out: &Out) {
    assert!(
        fs::symlink_metadata(output).is_err(),
        "a failed build left something at {}:\n{out}",
        output.display()
    );
    let want: BTreeSet<String> = expected.iter().map(|n| n.to_string()).collect();
    let dir = output.parent().expect("output has a directory");
    assert_eq!(
        names_in(dir),
        want,
        "a failed build left stray files in {}:\n{out}",
        dir.display()
    );
}

// ---- inputs ------------------------------------------------------------------

/// Nix base32 hashes for the fake store paths.
const HASHES: [&str; 4] = [
    "0c7qhwl4bgpjvhkclwsnxxzyq7cldm7x",
    "1m5zsvr3bq0a7cpd0ad4n9xz3hq2w8yk",
    "2ahy1gd9v9sjc5jcg6hjyxw6n2kx4dq3",
    "3pqv0lfwl1gz7kqd3vkc1q2i8ra5mmbn",
];

/// A fake Nix store with a closureInfo directory describing it.
struct Closure {
    /// `<base>/nix/store`, given as `--store-dir`.
    store: PathBuf,
    /// The closureInfo directory (`store-paths`, `registration`).
    info: PathBuf,
    /// The store paths' names (`<hash>-<name>`).
    names: Vec<String>,
}

impl Closure {
    fn path(&self, i: usize) -> PathBuf {
        self.store.join(&self.names[i])
    }

    /// `--closure INFO --store-dir STORE`.
    fn args(&self) -> Vec<String> {
        vec![
            "--closure".into(),
            s(&self.info).into(),
            "--store-dir".into(),
            s(&self.store).into(),
        ]
    }
}

/// Three store paths (a package directory with a program and a hard link,
/// a library directory, a single file) in `<base>/nix/store`, owned by
/// `user`, and their closureInfo in `<base>/closure-info`.
fn user_closure(user: &User, base: &Path) -> Closure {
    let store = base.join("nix/store");
    dir_as(user, &store);
    let names = vec![
        format!("{}-hello-2.12", HASHES[0]),
        format!("{}-libfoo-1.0", HASHES[1]),
        format!("{}-demo-config", HASHES[2]),
    ];
    let hello = store.join(&names[0]);
    file_as(
        user,
        &hello.join("bin/hello"),
        "#!/bin/sh\necho hello\n",
        0o555,
    );
    file_as(user, &hello.join("share/doc/README"), "hello\n", 0o444);
    fs::hard_link(hello.join("bin/hello"), hello.join("bin/hi")).expect("ln");
    let lib = store.join(&names[1]);
    file_as(
        user,
        &lib.join("lib/libfoo.so.1"),
        vec![0x7f; 64 * 1024],
        0o444,
    );
    file_as(user, &store.join(&names[2]), "config = demo\n", 0o444);
    write_closure_info(user, base, &store, &names);
    Closure {
        store,
        info: base.join("closure-info"),
        names,
    }
}

/// `<base>/closure-info` for `names` in `store`: `store-paths` and a
/// `registration` in `nix-store --dump-db` format (path, narHash, narSize,
/// deriver or empty, reference count, references). The first path has a
/// deriver and refers to itself and the second; the others refer to
/// themselves only.
fn write_closure_info(user: &User, base: &Path, store: &Path, names: &[String]) {
    let info = base.join("closure-info");
    dir_as(user, &info);
    let paths: Vec<String> = names
        .iter()
        .map(|n| s(&store.join(n)).to_string())
        .collect();
    write_as(user, &info.join("store-paths"), paths.join("\n") + "\n");
    let mut reg = String::new();
    for (i, p) in paths.iter().enumerate() {
        let (deriver, refs) = if i == 0 {
            (
                format!("{}/{}-hello-2.12.drv", s(store), HASHES[3]),
                vec![p.clone(), paths[1].clone()],
            )
        } else {
            (String::new(), vec![p.clone()])
        };
        reg += &format!(
            "{p}\nsha256:{}\n{}\n{deriver}\n{}\n",
            "1".repeat(52),
            4096 + i,
            refs.len()
        );
        for r in refs {
            reg += &format!("{r}\n");
        }
    }
    write_as(user, &info.join("registration"), reg);
}

/// The rootfs of the main round-trip test, all owned by `user`: the modes
/// that matter (600, 700, 1777, 4755, 2755), a symlink, a hard link pair,
/// a user.* xattr, a home, and part of /nix.
fn populate_rootfs(user: &User, root: &Path) {
    dir_as(user, root);
    chmod(root, 0o755);
    file_as(user, &root.join("etc/hostname"), "rootbox-test\n", 0o644);
    file_as(
        user,
        &root.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\n",
        0o600,
    );
    file_as(
        user,
        &root.join("etc/ssh/sshd_config"),
        "StrictModes yes\n",
        0o644,
    );
    file_as(user, &root.join("etc/xattr-file"), "has an xattr\n", 0o644);
    xattr::set(
        root.join("etc/xattr-file"),
        "user.rootbox.test",
        b"hello xattr",
    )
    .expect("setting a user.* xattr (does /tmp support them?)");
    file_as(
        user,
        &root.join("root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA test\n",
        0o600,
    );
    chmod(&root.join("root/.ssh"), 0o700);
    chmod(&root.join("root"), 0o700);
    dir_as(user, &root.join("tmp"));
    chmod(&root.join("tmp"), 0o1777);
    dir_as(user, &root.join("var/empty"));
    file_as(
        user,
        &root.join("usr/bin/su-demo"),
        "#!/bin/sh\necho su\n",
        0o4755,
    );
    file_as(
        user,
        &root.join("usr/bin/sg-demo"),
        "#!/bin/sh\necho sg\n",
        0o2755,
    );
    symlink_as(user, "su-demo", &root.join("usr/bin/su-link"));
    symlink_as(user, "/etc/hostname", &root.join("usr/bin/abs-link"));
    file_as(
        user,
        &root.join("usr/bin/hard-a"),
        "#!/bin/sh\necho hard\n",
        0o755,
    );
    fs::hard_link(root.join("usr/bin/hard-a"), root.join("usr/bin/hard-b")).expect("ln");
    file_as(
        user,
        &root.join("home/alice/notes.txt"),
        "alice's notes\n",
        0o644,
    );
    file_as(
        user,
        &root.join("home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA alice\n",
        0o600,
    );
    chmod(&root.join("home/alice/.ssh"), 0o700);
    dir_as(user, &root.join("nix/var/nix/profiles"));
}

/// A small rootfs owned by `user` (for tests about something else).
fn small_rootfs(user: &User, root: &Path) {
    dir_as(user, root);
    chmod(root, 0o755);
    file_as(user, &root.join("etc/hostname"), "small\n", 0o644);
    file_as(user, &root.join("usr/bin/tool"), "#!/bin/sh\n", 0o755);
}

/// A per-test layout for error cases: a small rootfs and an empty output
/// directory.
struct ErrCase {
    tmp: tempfile::TempDir,
    root: PathBuf,
    out_dir: PathBuf,
}

impl ErrCase {
    fn new(user: &User) -> ErrCase {
        let tmp = tempdir_for(user);
        let root = tmp.path().join("root");
        small_rootfs(user, &root);
        let out_dir = tmp.path().join("out");
        dir_as(user, &out_dir);
        ErrCase { tmp, root, out_dir }
    }
}

// ---- running rootbox -------------------------------------------------------

/// `rootbox build ARGS...` as `user`.
fn build(user: &User, args: &[&str]) -> Out {
    run(rootbox(user).arg("build").args(args))
}

/// `rootbox build ARGS... --json` as `user`: must succeed; the parsed result.
#[track_caller]
fn build_json(user: &User, args: &[&str]) -> Value {
    let out = build(user, &[args, &["--json"]].concat());
    out.assert_success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the --json result does not parse: {e}\n{out}"))
}

/// The subvolumes of a build result: name → (mountpoint, default).
fn report_subvols(r: &Value) -> BTreeMap<String, (String, bool)> {
    r["subvolumes"]
        .as_array()
        .unwrap_or_else(|| panic!("no subvolumes array in {r:#}"))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_string(),
                (
                    s["mountpoint"].as_str().expect("mountpoint").to_string(),
                    s["default"].as_bool().expect("default"),
                ),
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

// ---- reading images back as root ------------------------------------------------

/// One entry as `find -printf` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    uid: u32,
    gid: u32,
    /// Permission bits, set-id and sticky bits included (`%m`).
    mode: u32,
    /// `%y`: f, d, l, ...
    kind: String,
    /// Symlink target (`%l`).
    target: String,
    ino: u64,
    nlink: u64,
}

/// `find DIR -mindepth 1 -printf …`: relative path → entry.
fn find_listing(dir: &Path) -> BTreeMap<String, Found> {
    let out = run(Command::new("find").args([
        s(dir),
        "-mindepth",
        "1",
        "-printf",
        "%P\\0%U\\0%G\\0%m\\0%y\\0%l\\0%i\\0%n\\0",
    ]));
    out.assert_success();
    let fields: Vec<&str> = out.stdout.split('\0').collect();
    fields
        .chunks_exact(8)
        .map(|f| {
            (
                f[0].to_string(),
                Found {
                    uid: f[1].parse().expect("uid"),
                    gid: f[2].parse().expect("gid"),
                    mode: u32::from_str_radix(f[3], 8).expect("mode"),
                    kind: f[4].to_string(),
                    target: f[5].to_string(),
                    ino: f[6].parse().expect("ino"),
                    nlink: f[7].parse().expect("nlink"),
                },
            )
        })
        .collect()
}

/// `btrfs subvolume list` of a mounted top level: the subvolume paths.
fn btrfs_subvolume_list(top: &Path) -> BTreeSet<String> {
    let out = run(Command::new("btrfs").args(["subvolume", "list", s(top)]));
    out.assert_success();
    out.stdout
        .lines()
        .map(|l| {
            l.split_once(" path ")
                .unwrap_or_else(|| panic!("unexpected `btrfs subvolume list` line {l:?}"))
                .1
                .to_string()
        })
        .collect()
}

/// `btrfs subvolume get-default`: the path of the default subvolume, or
/// `<FS_TREE>` for the top level.
fn btrfs_default(top: &Path) -> String {
    let out = run(Command::new("btrfs").args(["subvolume", "get-default", s(top)]));
    out.assert_success();
    let line = out.trimmed();
    match line.split_once(" path ") {
        Some((_, p)) => p.to_string(),
        None if line.contains("FS_TREE") => "<FS_TREE>".to_string(),
        None => panic!("unexpected get-default output:\n{out}"),
    }
}

/// Mount-based checks need root; without it the tests rely on inspect.
fn can_mount() -> bool {
    if !is_root() {
        skipped(format_args!(
            "not root: the image is read back with rootbox inspect only (no loop mount)"
        ));
    }
    is_root()
}

/// The filesystem UUID the tests ask for.
const UUID: &str = "44444444-4444-4444-8888-888888888888";
