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
//! The tests, by topic:
//!
//! - `round_trip`: a rootfs and a closure reach the image owned by root,
//!   file capabilities, the impermanence layout;
//! - `nixos`: layouts read from a NixOS `fileSystems` JSON;
//! - `owners`: ids the namespace does not map, `--map subid|single|subrange`,
//!   the ownership manifest, device nodes, `--no-userns`;
//! - `errors`: bad input is refused and leaves nothing; `--force`;
//! - `json`: the `--json` result;
//! - `reproducible`: two builds of two copies are byte-identical.

#![forbid(unsafe_code)]

mod common;

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
        eprintln!("not root: the image is read back with rootbox inspect only (no loop mount)");
    }
    is_root()
}

/// The filesystem UUID the tests ask for.
const UUID: &str = "44444444-4444-4444-8888-888888888888";

// A rootfs and a closure reach the image owned by root, with their modes,
// links, xattrs and file capabilities; the impermanence layout (no root
// subvolume) says what it left out.

// ---- the round trip ------------------------------------------------------------

#[test]
fn rootfs_and_closure_round_trip_as_root_owned_image() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    populate_rootfs(&user, &root);
    let closure = user_closure(&user, tmp.path());
    let out_dir = tmp.path().join("out");
    dir_as(&user, &out_dir);
    let img = out_dir.join("nixos.img");

    let mut args = vec![
        "--rootfs".to_string(),
        s(&root).into(),
        "--subvol".into(),
        "@:/:default".into(),
        "--subvol".into(),
        "@nix:/nix".into(),
        "--subvol".into(),
        "@home:/home".into(),
        "--label".into(),
        "rbtest".into(),
        "--uuid".into(),
        UUID.into(),
        "-o".into(),
        s(&img).into(),
    ];
    args.extend(closure.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = build_json(&user, &args);

    // The result.
    assert_eq!(r["verified"], true, "{r:#}");
    assert_eq!(r["registration"], "/nix-path-registration", "{r:#}");
    assert_eq!(r["store_paths"], 3, "{r:#}");
    assert_eq!(
        r["copied_bytes"], 0,
        "everything is the user's: nothing to copy\n{r:#}"
    );
    let subvols = report_subvols(&r);
    let want: BTreeMap<String, (String, bool)> = [
        ("@", ("/", true)),
        ("@nix", ("/nix", false)),
        ("@home", ("/home", false)),
    ]
    .into_iter()
    .map(|(n, (m, d))| (n.to_string(), (m.to_string(), d)))
    .collect();
    assert_eq!(subvols, want, "{r:#}");
    assert!(strings(&r["left_out"]).is_empty(), "{r:#}");

    // Read back without root.
    let ins = Inspected::of(&user, &img);
    assert_eq!(
        ins.not_root_owned(),
        Vec::<String>::new(),
        "owners other than 0:0"
    );
    assert_eq!(
        ins.subvolumes(),
        ["@", "@nix", "@home"].map(String::from).into(),
    );
    assert_eq!(ins.default_subvolume(), "@");
    for (key, mode) in [
        ("@/etc/shadow", 0o100600),
        ("@/root", 0o40700),
        ("@/root/.ssh", 0o40700),
        ("@/root/.ssh/authorized_keys", 0o100600),
        ("@/tmp", 0o41777),
        ("@/usr/bin/su-demo", 0o104755),
        ("@/usr/bin/sg-demo", 0o102755),
        ("@home/alice/.ssh", 0o40700),
        ("@home/alice/notes.txt", 0o100644),
    ] {
        assert_eq!(ins.mode(key), mode, "mode of {key}: {:#}", ins.get(key));
    }
    assert_eq!(ins.get("@/usr/bin/su-link")["symlink_target"], "su-demo");
    assert_eq!(
        ins.get("@/usr/bin/abs-link")["symlink_target"],
        "/etc/hostname"
    );
    let (a, b) = (ins.get("@/usr/bin/hard-a"), ins.get("@/usr/bin/hard-b"));
    assert_eq!(a["ino"], b["ino"], "hard links lost: {a:#} {b:#}");
    assert_eq!(a["nlink"], 2, "{a:#}");
    assert_eq!(
        ins.xattr("@/etc/xattr-file", "user.rootbox.test")
            .as_deref(),
        Some(&b"hello xattr"[..])
    );
    for n in &closure.names {
        ins.get(&format!("@nix/store/{n}"));
    }
    assert_eq!(
        ins.children("@nix/store"),
        closure.names.iter().cloned().collect(),
        "the store holds exactly the closure"
    );
    ins.get("@nix/var/nix/profiles");
    ins.get("@/nix-path-registration");
    assert!(
        ins.children("@/nix").is_empty(),
        "/nix in @ must be an empty mount point"
    );
    assert!(
        ins.children("@/home").is_empty(),
        "/home in @ must be an empty mount point"
    );

    if !can_mount() {
        assert_btrfs_check(&img);
        return;
    }
    {
        let top = Mounted::new(&img, None);
        assert_eq!(
            btrfs_subvolume_list(top.path()),
            ["@", "@nix", "@home"].map(String::from).into()
        );
        assert_eq!(btrfs_default(top.path()), "@");
        assert_eq!(
            names_in(top.path()),
            ["@", "@nix", "@home"].map(String::from).into(),
            "the top level holds only the subvolumes"
        );

        let rootsv = Mounted::new(&img, Some("@"));
        let nix = Mounted::new(&img, Some("@nix"));
        let home = Mounted::new(&img, Some("@home"));
        for m in [&rootsv, &nix, &home] {
            for (p, f) in find_listing(m.path()) {
                assert!(
                    f.uid == 0 && f.gid == 0,
                    "{p} is owned by {}:{} (test user {}:{}, overflow 65534)",
                    f.uid,
                    f.gid,
                    user.uid,
                    user.gid
                );
            }
        }

        // @ is the rootfs minus /nix and /home (empty mount points), plus
        // the registration: same paths, modes, types and targets.
        let src = find_listing(&root);
        let want: BTreeMap<String, (u32, String, String)> = src
            .iter()
            .filter(|(p, _)| !p.starts_with("nix/") && !p.starts_with("home/"))
            .map(|(p, f)| (p.clone(), (f.mode, f.kind.clone(), f.target.clone())))
            .chain([(
                "nix-path-registration".to_string(),
                (0o644, "f".to_string(), String::new()),
            )])
            .collect();
        let got: BTreeMap<String, (u32, String, String)> = find_listing(rootsv.path())
            .into_iter()
            .map(|(p, f)| (p, (f.mode, f.kind, f.target)))
            .collect();
        assert_eq!(got, want, "@ differs from the rootfs");
        let hard_a = fs::metadata(rootsv.path().join("usr/bin/hard-a")).expect("hard-a");
        let hard_b = fs::metadata(rootsv.path().join("usr/bin/hard-b")).expect("hard-b");
        assert_eq!((hard_a.ino(), hard_a.nlink()), (hard_b.ino(), 2));
        assert_eq!(
            xattr::get(rootsv.path().join("etc/xattr-file"), "user.rootbox.test")
                .expect("getxattr")
                .as_deref(),
            Some(&b"hello xattr"[..])
        );
        assert_eq!(
            fs::read_to_string(rootsv.path().join("etc/shadow")).expect("read"),
            "root:*:19000:0:99999:7:::\n"
        );

        // /home in @home, with its modes.
        let h = find_listing(home.path());
        assert_eq!(
            h.keys().cloned().collect::<BTreeSet<_>>(),
            [
                "alice",
                "alice/notes.txt",
                "alice/.ssh",
                "alice/.ssh/authorized_keys"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(h["alice/.ssh"].mode, 0o700);
        assert_eq!(h["alice/.ssh/authorized_keys"].mode, 0o600);

        // The store under @nix/store, the registration rewritten to /nix/store.
        let store = nix.path().join("store");
        assert_eq!(names_in(&store), closure.names.iter().cloned().collect());
        assert_eq!(
            fs::read_to_string(store.join(&closure.names[0]).join("bin/hello")).expect("read"),
            "#!/bin/sh\necho hello\n"
        );
        let hello = fs::metadata(store.join(&closure.names[0]).join("bin/hello")).expect("stat");
        let hi = fs::metadata(store.join(&closure.names[0]).join("bin/hi")).expect("stat");
        assert_eq!(hello.mode() & 0o7777, 0o555);
        assert_eq!(
            (hi.ino(), hi.nlink()),
            (hello.ino(), 2),
            "hard link in the store"
        );
        assert!(nix.path().join("var/nix/profiles").is_dir());
        let reg = fs::read_to_string(rootsv.path().join("nix-path-registration")).expect("read");
        let host_store = s(&closure.store);
        assert!(
            !reg.contains(host_store),
            "the registration still names the build machine's store {host_store}:\n{reg}"
        );
        let lines: Vec<&str> = reg.lines().collect();
        for n in &closure.names {
            let want = format!("/nix/store/{n}");
            assert!(
                lines.contains(&want.as_str()),
                "{want} not registered:\n{reg}"
            );
        }
        assert_eq!(
            lines[3],
            format!("/nix/store/{}-hello-2.12.drv", HASHES[3]),
            "deriver:\n{reg}"
        );
        assert_eq!(lines[4], "2", "reference count:\n{reg}");
        assert_eq!(
            lines[6],
            format!("/nix/store/{}", closure.names[1]),
            "reference:\n{reg}"
        );
        assert!(
            !nix.path().join("nix-path-registration").exists(),
            "with a root subvolume the registration belongs at /nix-path-registration only"
        );
    }
    assert_btrfs_check(&img);
}

// ---- file capabilities ------------------------------------------------------------

#[test]
fn file_capability_set_in_the_sandbox_is_valid_for_the_booted_root() {
    let user = setup();
    let Some(setcap) = find_tool("setcap") else {
        skip!("setcap (libcap2-bin) is not installed");
    };
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    small_rootfs(&user, &root);
    let prog = root.join("usr/bin/ping-demo");
    file_as(&user, &prog, "#!/bin/sh\necho ping\n", 0o755);
    run(rootbox(&user).args([
        "run",
        "--bind",
        s(&root),
        s(&root),
        "--",
        s(&setcap),
        "cap_net_bind_service+ep",
        s(&prog),
    ]))
    .assert_success();
    assert!(
        xattr::get(&prog, "security.capability")
            .expect("getxattr")
            .is_some(),
        "setcap in the sandbox set no capability"
    );

    let img = tmp.path().join("cap.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["verified"], true, "{r:#}");

    // Without root: a v2 capability (no namespace root id), bit 10 effective.
    let ins = Inspected::of(&user, &img);
    let cap = ins
        .xattr("@/usr/bin/ping-demo", "security.capability")
        .unwrap_or_else(|| {
            panic!(
                "no security.capability in the image: {:#}",
                ins.get("@/usr/bin/ping-demo")
            )
        });
    assert_eq!(
        cap.len(),
        20,
        "want a v2 capability (20 bytes, valid for any root), got {cap:02x?}"
    );
    assert_eq!(
        u32::from_le_bytes(cap[0..4].try_into().unwrap()),
        0x0200_0001,
        "magic: v2 with the effective flag: {cap:02x?}"
    );
    assert_eq!(
        u32::from_le_bytes(cap[4..8].try_into().unwrap()),
        1 << 10,
        "permitted: cap_net_bind_service only: {cap:02x?}"
    );

    if !can_mount() {
        return;
    }
    let Some(getcap) = find_tool("getcap") else {
        skip!("getcap is not installed");
    };
    {
        let m = Mounted::new(&img, Some("@"));
        let out = run(Command::new(&getcap).arg(m.path().join("usr/bin/ping-demo")));
        out.assert_success();
        assert!(
            out.stdout.contains("cap_net_bind_service=ep") && !out.stdout.contains("rootid"),
            "getcap in the image should show cap_net_bind_service=ep for the real root:\n{out}"
        );
    }
    assert_btrfs_check(&img);
}

// ---- impermanence ---------------------------------------------------------------

#[test]
fn impermanence_layout_has_no_root_subvolume_and_reports_what_it_left_out() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    dir_as(&user, &root);
    file_as(&user, &root.join("etc/hostname"), "ephemeral\n", 0o644);
    file_as(&user, &root.join("var/lib/thing"), "state\n", 0o644);
    file_as(
        &user,
        &root.join("persist/etc/machine-id"),
        "0123456789abcdef\n",
        0o444,
    );
    file_as(&user, &root.join("persist/var/lib/db"), "db\n", 0o600);
    dir_as(&user, &root.join("nix/var/nix"));
    let closure = user_closure(&user, tmp.path());
    let img = tmp.path().join("state.img");
    let mut args: Vec<String> = [
        "--rootfs",
        s(&root),
        "--subvol",
        "@nix:/nix",
        "--subvol",
        "@persist:/persist",
        "-o",
        s(&img),
    ]
    .map(String::from)
    .into();
    args.extend(closure.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = build_json(&user, &args);

    assert_eq!(strings(&r["left_out"]), ["/etc", "/var"], "{r:#}");
    assert_eq!(r["registration"], "/nix/nix-path-registration", "{r:#}");
    let subvols = report_subvols(&r);
    assert_eq!(
        subvols.keys().cloned().collect::<BTreeSet<_>>(),
        ["@nix", "@persist"].map(String::from).into(),
        "{r:#}"
    );
    assert!(
        subvols.values().all(|(_, d)| !d),
        "no subvolume is the default: {r:#}"
    );

    let ins = Inspected::of(&user, &img);
    assert_eq!(
        ins.subvolumes(),
        ["@nix", "@persist"].map(String::from).into()
    );
    assert_eq!(
        ins.default_subvolume(),
        "",
        "the default must stay the top level"
    );
    assert_eq!(
        ins.children(""),
        ["@nix", "@persist"].map(String::from).into(),
        "the top level holds only the subvolumes"
    );
    ins.get("@nix/nix-path-registration");
    assert_eq!(
        ins.children("@nix/store"),
        closure.names.iter().cloned().collect()
    );
    assert_eq!(ins.mode("@persist/var/lib/db"), 0o100600);
    assert_eq!(ins.not_root_owned(), Vec::<String>::new());

    if !can_mount() {
        assert_btrfs_check(&img);
        return;
    }
    {
        let top = Mounted::new(&img, None);
        assert_eq!(
            btrfs_subvolume_list(top.path()),
            ["@nix", "@persist"].map(String::from).into()
        );
        assert_eq!(btrfs_default(top.path()), "<FS_TREE>");
        assert_eq!(
            names_in(top.path()),
            ["@nix", "@persist"].map(String::from).into()
        );
        let reg = fs::read_to_string(top.path().join("@nix/nix-path-registration"))
            .expect("the registration at @nix/nix-path-registration");
        assert!(reg.starts_with("/nix/store/"), "{reg}");
        assert_eq!(
            fs::read_to_string(top.path().join("@persist/etc/machine-id")).expect("read"),
            "0123456789abcdef\n"
        );
    }
    assert_btrfs_check(&img);
}

// Layouts read from a NixOS `fileSystems` JSON (`--file-systems`), from
// the fixtures in tests/fixtures/build/.

// ---- NixOS fileSystems --------------------------------------------------------

/// A fixture of tests/fixtures/build, copied where the test user can read it.
fn fixture(user: &User, dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/build")
        .join(name);
    let dst = dir.join(name);
    write_as(
        user,
        &dst,
        fs::read(&src).unwrap_or_else(|e| panic!("reading fixture {}: {e}", src.display())),
    );
    dst
}

/// A rootfs with something at each mount point the fixtures use.
fn nixos_rootfs(user: &User, root: &Path) {
    small_rootfs(user, root);
    file_as(user, &root.join("home/alice/notes.txt"), "notes\n", 0o644);
    file_as(user, &root.join("var/log/boot.log"), "booted\n", 0o644);
    file_as(user, &root.join("persist/etc/machine-id"), "0123\n", 0o444);
    file_as(user, &root.join("data/big.bin"), "data\n", 0o644);
    dir_as(user, &root.join("nix/var/nix"));
}

/// Builds with `--file-systems FIXTURE` plus `extra`; the result and the image.
fn build_nixos(user: &User, tmp: &Path, name: &str, extra: &[&str]) -> (Value, Inspected) {
    let root = tmp.join("root");
    if !root.exists() {
        nixos_rootfs(user, &root);
    }
    let closure = user_closure(user, &tmp.join(name.trim_end_matches(".json")));
    let fs_json = fixture(user, tmp, name);
    let img = tmp.join(format!("{name}.img"));
    let mut args: Vec<String> = [
        "--rootfs",
        s(&root),
        "--file-systems",
        s(&fs_json),
        "-o",
        s(&img),
    ]
    .map(String::from)
    .into();
    args.extend(closure.args());
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = build_json(user, &args);
    assert_eq!(r["verified"], true, "{r:#}");
    assert_btrfs_check(&img);
    let ins = Inspected::of(user, &img);
    assert_eq!(ins.not_root_owned(), Vec::<String>::new(), "{name}");
    (r, ins)
}

#[test]
fn nixos_tmpfs_root_with_nix_and_persist_by_label() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let (r, ins) = build_nixos(&user, tmp.path(), "tmpfs-root.json", &["--label", "nixos"]);
    assert_eq!(
        report_subvols(&r),
        [("@nix", "/nix"), ("@persist", "/persist")]
            .into_iter()
            .map(|(n, m)| (n.to_string(), (m.to_string(), false)))
            .collect(),
        "{r:#}"
    );
    assert_eq!(r["label"], "nixos", "{r:#}");
    assert_eq!(r["registration"], "/nix/nix-path-registration", "{r:#}");
    let left = strings(&r["left_out"]);
    for l in ["/etc", "/usr", "/home", "/var", "/data"] {
        assert!(left.contains(&l.to_string()), "{l} not in left_out: {r:#}");
    }
    let warnings = strings(&r["warnings"]).join("\n");
    assert!(
        warnings.contains("/nix") && warnings.contains("compress=zstd"),
        "the boot-time mount options of /nix should be mentioned: {r:#}"
    );
    assert_eq!(
        ins.subvolumes(),
        ["@nix", "@persist"].map(String::from).into()
    );
    assert_eq!(ins.default_subvolume(), "");
    ins.get("@nix/nix-path-registration");
    ins.get("@persist/etc/machine-id");
}

#[test]
fn nixos_subvol_with_leading_slash_names_a_top_level_subvolume() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let (r, ins) = build_nixos(
        &user,
        tmp.path(),
        "slash-subvol.json",
        &["--label", "nixos"],
    );
    assert_eq!(
        report_subvols(&r),
        [
            ("@root", "/", true),
            ("@home", "/home", false),
            ("@log", "/var/log", false)
        ]
        .into_iter()
        .map(|(n, m, d)| (n.to_string(), (m.to_string(), d)))
        .collect(),
        "{r:#}"
    );
    assert_eq!(
        ins.subvolumes(),
        ["@root", "@home", "@log"].map(String::from).into()
    );
    assert_eq!(ins.default_subvolume(), "@root");
    ins.get("@log/boot.log");
    ins.get("@home/alice/notes.txt");
    ins.get("@root/nix-path-registration");
    assert!(ins.children("@root/var/log").is_empty());
    assert_eq!(r["label"], "nixos");
}

#[test]
fn nixos_nested_root_nix_and_store_subvolumes() {
    let user = setup();
    let tmp = tempdir_for(&user);
    // No --label: the device (by-uuid) of the btrfs entries is the image's,
    // and the image takes its uuid.
    let (r, ins) = build_nixos(&user, tmp.path(), "nested.json", &[]);
    assert_eq!(
        report_subvols(&r),
        [
            ("@", "/", true),
            ("@nix", "/nix", false),
            ("@store", "/nix/store", false)
        ]
        .into_iter()
        .map(|(n, m, d)| (n.to_string(), (m.to_string(), d)))
        .collect(),
        "{r:#}"
    );
    assert_eq!(r["uuid"], UUID, "{r:#}");
    assert_eq!(ins.default_subvolume(), "@");
    let closure_names: BTreeSet<String> = fs::read_dir(tmp.path().join("nested/nix/store"))
        .expect("the closure")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        ins.children("@store"),
        closure_names,
        "the store paths go to @store"
    );
    assert!(
        ins.children("@nix/store").is_empty(),
        "@nix/store is an empty mount point"
    );
    ins.get("@nix/var/nix");
    ins.get("@/nix-path-registration");
    assert!(ins.children("@/nix").is_empty());
}

#[test]
fn nixos_entries_on_other_devices_are_ignored() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let (r, ins) = build_nixos(
        &user,
        tmp.path(),
        "foreign-device.json",
        &["--label", "nixos"],
    );
    assert_eq!(
        report_subvols(&r).keys().cloned().collect::<BTreeSet<_>>(),
        ["@".to_string()].into(),
        "{r:#}"
    );
    assert_eq!(ins.subvolumes(), ["@".to_string()].into());
    // /data has no subvolume here: it stays in @, as rootfs content.
    ins.get("@/data/big.bin");
}

#[test]
fn nixos_errors_name_the_problem_and_write_nothing() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    nixos_rootfs(&user, &root);
    let out_dir = tmp.path().join("out");
    dir_as(&user, &out_dir);
    let img = out_dir.join("x.img");
    for (name, label, needles) in [
        ("subvolid.json", "nixos", &["/srv", "subvolid=257"][..]),
        (
            "tmpfs-root.json",
            "other",
            &["label=other", "no btrfs entry"][..],
        ),
    ] {
        let fs_json = fixture(&user, tmp.path(), name);
        let out = build(
            &user,
            &[
                "--rootfs",
                s(&root),
                "--file-systems",
                s(&fs_json),
                "--label",
                label,
                "-o",
                s(&img),
            ],
        );
        assert_ne!(out.code(), Some(0), "{name} must be refused:\n{out}");
        for n in needles.iter().chain([&s(&fs_json)]) {
            out.assert_stderr_contains(n);
        }
        assert_nothing_written(&img, &[], &out);
    }
}

// Who owns what in the image: a closure owned by ids the namespace does
// not map, `--map subid` and `--map single`, the ownership manifest,
// device nodes and set-id bits, `--no-userns`, and `--map subrange` on a
// tree numbered like mmdebstrap's.

// ---- a closure owned by ids the namespace does not map ----------------------------

/// A store of three paths: two owned by uid/gid 4242 (not the test user,
/// not in its subordinate range), one by root; readable by everyone.
fn foreign_closure(user: &User, base: &Path) -> Closure {
    assert!(is_root());
    let store = base.join("nix/store");
    dir_as(user, &store);
    let names = vec![
        format!("{}-tool-1.0", HASHES[0]),
        format!("{}-data-1.0", HASHES[1]),
        format!("{}-rootowned", HASHES[2]),
    ];
    let (o, g) = (4242, 4242);
    let p = store.join(&names[0]);
    dir_owned(&p, 0o755, o, g);
    dir_owned(&p.join("bin"), 0o755, o, g);
    file_owned(&p.join("bin/tool"), "#!/bin/sh\necho tool\n", 0o755, o, g);
    fs::hard_link(p.join("bin/tool"), p.join("bin/tool-hard")).expect("ln");
    std::os::unix::fs::symlink("tool", p.join("bin/tool-link")).expect("ln -s");
    std::os::unix::fs::lchown(p.join("bin/tool-link"), Some(o), Some(g)).expect("chown");
    let p = store.join(&names[1]);
    dir_owned(&p, 0o755, o, g);
    file_owned(&p.join("table.dat"), vec![42u8; 100_000], 0o644, o, g);
    file_owned(&store.join(&names[2]), "owned by root\n", 0o644, 0, 0);
    write_closure_info(user, base, &store, &names);
    Closure {
        store,
        info: base.join("closure-info"),
        names,
    }
}

#[test]
fn closure_owned_by_unmapped_ids_is_copied_and_becomes_roots() {
    let user = setup();
    if !is_root() {
        skip!("making files owned by uid 4242 needs root");
    }
    let tmp = tempdir_for(&user);
    let closure = foreign_closure(&user, tmp.path());
    // auto: bound as they are (zero copy) and given to root in the image by
    // the rewrite after mkfs; copy: copied into scratch space, where the
    // copies are root's. Both must give the same image content.
    for mode in ["auto", "copy"] {
        let img = tmp.path().join(format!("store-{mode}.img"));
        let mut args: Vec<String> = [
            "--subvol",
            "@nix:/nix",
            "--store-staging",
            mode,
            "-o",
            s(&img),
        ]
        .map(String::from)
        .into();
        args.extend(closure.args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = build_json(&user, &args);
        if mode == "copy" {
            assert!(
                r["copied_bytes"].as_u64().unwrap_or(0) >= 100_000,
                "the unmapped store paths must be copied: {r:#}"
            );
        } else {
            assert_eq!(r["copied_bytes"], 0, "auto staging must not copy: {r:#}");
            assert!(
                r["rewritten_inodes"].as_u64().unwrap_or(0) >= 5,
                "the unmapped inodes must be rewritten: {r:#}"
            );
        }
        assert_eq!(r["verified"], true, "{r:#}");

        let ins = Inspected::of(&user, &img);
        assert_eq!(
            ins.not_root_owned(),
            Vec::<String>::new(),
            "copies must be root's"
        );
        let tool = format!("@nix/store/{}/bin/tool", closure.names[0]);
        assert_eq!(ins.mode(&tool), 0o100755);
        let hard = ins.get(&format!("@nix/store/{}/bin/tool-hard", closure.names[0]));
        assert_eq!(
            (&hard["ino"], &hard["nlink"]),
            (&ins.get(&tool)["ino"], &Value::from(2)),
            "the copy must keep the hard link"
        );
        assert_eq!(
            ins.get(&format!("@nix/store/{}/bin/tool-link", closure.names[0]))["symlink_target"],
            "tool"
        );
        assert_eq!(
            ins.mode(&format!("@nix/store/{}/table.dat", closure.names[1])),
            0o100644
        );
        assert_eq!(
            ins.mode(&format!("@nix/store/{}", closure.names[2])),
            0o100644
        );

        if can_mount() {
            {
                let m = Mounted::new(&img, Some("@nix"));
                let found = find_listing(&m.path().join("store"));
                assert!(found.len() >= 8, "{found:#?}");
                for (p, f) in &found {
                    assert!(
                        f.uid == 0 && f.gid == 0,
                        "{p}: {}:{} in the image",
                        f.uid,
                        f.gid
                    );
                }
                assert_eq!(
                    fs::read(
                        m.path()
                            .join("store")
                            .join(&closure.names[1])
                            .join("table.dat")
                    )
                    .expect("read")
                    .len(),
                    100_000
                );
            }
            assert_btrfs_check(&img);
        }
    }

    // --store-staging bind refuses, naming the path and the way out.
    let out_dir = tmp.path().join("out");
    dir_as(&user, &out_dir);
    let img2 = out_dir.join("bind.img");
    let mut args: Vec<String> = [
        "--subvol",
        "@nix:/nix",
        "--store-staging",
        "bind",
        "-o",
        s(&img2),
    ]
    .map(String::from)
    .into();
    args.extend(closure.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = build(&user, &args);
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("--store-staging auto");
    assert!(
        closure.names[..2]
            .iter()
            .any(|n| out.stderr.contains(&format!("{}/{n}", s(&closure.store)))),
        "the message should name the store path:\n{out}"
    );
    assert_nothing_written(&img2, &[], &out);
}

// ---- --map subid ---------------------------------------------------------------

#[test]
fn subordinate_owners_are_shifted_with_map_subid_and_rewritten_with_map_single() {
    let user = setup();
    if !is_root() {
        skip!("chowning a file into the subordinate range needs root");
    }
    let Some(((ustart, ucount), (gstart, gcount))) = have_subids(&user) else {
        skip!(
            "{} has no subordinate ranges or newuidmap is missing",
            user.name
        );
    };
    assert!(ucount > 1000 && gcount > 100);
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    small_rootfs(&user, &root);
    dir_as(&user, &root.join("srv/app"));
    let f = root.join("srv/app/owned-by-app");
    // 0644: readable to the test user, which --map single needs to copy it.
    file_owned(&f, vec![7u8; 10_000], 0o644, ustart + 999, gstart + 99);

    let img = tmp.path().join("subid.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "--map",
            "subid",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["map"], "subid", "{r:#}");
    assert_eq!(r["copied_bytes"], 0, "a mapped owner needs no copy: {r:#}");
    let ins = Inspected::of(&user, &img);
    let e = ins.get("@/srv/app/owned-by-app");
    assert_eq!(
        (e["uid"].as_u64(), e["gid"].as_u64()),
        (Some(1000), Some(100)),
        "{e:#}"
    );
    assert_eq!(ins.mode("@/srv/app/owned-by-app"), 0o100644);
    assert_eq!(ins.get("@/srv/app")["uid"], 0);
    if can_mount() {
        let m = Mounted::new(&img, Some("@"));
        let found = find_listing(m.path());
        let f = &found["srv/app/owned-by-app"];
        assert_eq!((f.uid, f.gid, f.mode), (1000, 100, 0o644));
        for (p, f) in &found {
            if p != "srv/app/owned-by-app" {
                assert_eq!((f.uid, f.gid), (0, 0), "{p}");
            }
        }
    }

    let img = tmp.path().join("single.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "--map",
            "single",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["map"], "single", "{r:#}");
    assert!(
        r["rewritten_inodes"].as_u64().unwrap_or(0) >= 1 && r["copied_bytes"] == 0,
        "with --map single the file does not map: bound, then given to root in the image: {r:#}"
    );
    let ins = Inspected::of(&user, &img);
    assert_eq!(ins.not_root_owned(), Vec::<String>::new());
    assert_eq!(ins.mode("@/srv/app/owned-by-app"), 0o100644);
    if can_mount() {
        let m = Mounted::new(&img, Some("@"));
        let f = &find_listing(m.path())["srv/app/owned-by-app"];
        assert_eq!((f.uid, f.gid, f.mode), (0, 0, 0o644));
    }
}

// ---- after mkfs: the ownership manifest and device numbers --------------------

#[test]
fn ownership_manifest_gives_alice_her_home_and_refuses_unknown_paths() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    file_as(
        &user,
        &root.join("home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA alice\n",
        0o600,
    );
    file_as(&user, &root.join("home/alice/notes"), "hi\n", 0o644);
    file_as(&user, &root.join("etc/hostname"), "box\n", 0o644);
    chmod(&root.join("home/alice/.ssh"), 0o755);
    let manifest = tmp.path().join("owners");
    file_as(
        &user,
        &manifest,
        "# alice owns her home\n/home/alice/** 1000 100\n/home/alice/.ssh 1000 100 0700\n",
        0o644,
    );
    let img = tmp.path().join("m.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "--subvol",
            "@home:/home",
            "--owners",
            s(&manifest),
            "-o",
            s(&img),
        ],
    );
    assert!(r["rewritten_inodes"].as_u64().unwrap_or(0) >= 4, "{r:#}");
    let ins = Inspected::of(&user, &img);
    for p in [
        "@home/alice",
        "@home/alice/.ssh",
        "@home/alice/.ssh/authorized_keys",
        "@home/alice/notes",
    ] {
        let e = ins.get(p);
        assert_eq!(
            (e["uid"].as_u64(), e["gid"].as_u64()),
            (Some(1000), Some(100)),
            "{p}: {e}"
        );
    }
    assert_eq!(ins.mode("@home/alice/.ssh"), 0o40700, "the manifest's mode");
    assert_eq!(
        ins.mode("@home/alice/.ssh/authorized_keys"),
        0o100600,
        "mode kept"
    );
    let e = ins.get("@/etc/hostname");
    assert_eq!(
        (e["uid"].as_u64(), e["gid"].as_u64()),
        (Some(0), Some(0)),
        "outside the manifest: root's"
    );
    if can_mount() {
        let m = Mounted::new(&img, Some("@home"));
        let md = fs::symlink_metadata(m.path().join("alice/.ssh")).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (1000, 100, 0o700));
    }
    if can_mount() {
        assert_btrfs_check(&img);
    }

    // A rule that matches nothing is an error, and nothing is written.
    let bad = tmp.path().join("bad-owners");
    file_as(
        &user,
        &bad,
        "/home/alice/** 1000 100\n/home/bob 1001 100\n",
        0o644,
    );
    let img2 = tmp.path().join("bad.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "--owners",
            s(&bad),
            "-o",
            s(&img2),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("line 2: /home/bob matches nothing");
    assert!(!img2.exists(), "nothing may be left at the output path");
}

#[test]
fn device_nodes_keep_their_numbers_and_unmapped_setuid_is_dropped() {
    let user = setup();
    if !is_root() {
        skip!("device nodes and files of other owners need root to make");
    }
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    dir_as(&user, &root.join("dev"));
    let null = root.join("dev/null");
    let st = Command::new("mknod")
        .args([s(&null), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    lchown(&null, Some(user.uid), Some(user.gid)).unwrap();
    // A setuid file of an owner the namespace does not map must not
    // become setuid root.
    let foreign = root.join("usr/bin/foreign");
    file_as(&user, &foreign, "#!/bin/sh\n", 0o755);
    lchown(&foreign, Some(4242), Some(4242)).unwrap();
    chmod(&foreign, 0o4755);
    let img = tmp.path().join("dev.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["copied_bytes"], 0, "{r:#}");
    let ins = Inspected::of(&user, &img);
    let e = ins.get("@/dev/null");
    assert_eq!(
        e["mode"].as_u64().map(|m| m as u32 & 0o170000),
        Some(0o020000),
        "{e}"
    );
    let f = ins.get("@/usr/bin/foreign");
    assert_eq!(
        (f["uid"].as_u64(), f["gid"].as_u64()),
        (Some(0), Some(0)),
        "{f}"
    );
    assert_eq!(
        ins.mode("@/usr/bin/foreign"),
        0o100755,
        "set-id bits of an unmapped owner are dropped"
    );
    if can_mount() {
        {
            let m = Mounted::new(&img, None);
            let md = fs::symlink_metadata(m.path().join("@/dev/null")).unwrap();
            use std::os::unix::fs::FileTypeExt;
            assert!(md.file_type().is_char_device());
            assert_eq!(
                md.rdev(),
                nix::sys::stat::makedev(1, 3),
                "mkfs writes 0:0; the rewrite restores 1:3"
            );
        }
        assert_btrfs_check(&img);
    }
}

#[test]
fn no_userns_build_lists_the_same_as_the_userns_build() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    file_as(
        &user,
        &root.join("etc/ssh/sshd_config"),
        "StrictModes yes\n",
        0o644,
    );
    file_as(
        &user,
        &root.join("root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA root\n",
        0o600,
    );
    chmod(&root.join("root/.ssh"), 0o700);
    chmod(&root.join("root"), 0o700);
    file_as(&user, &root.join("usr/bin/su"), "#!/bin/sh\n", 0o4755);
    file_as(&user, &root.join("var/tmp/.keep"), "", 0o644);
    chmod(&root.join("var/tmp"), 0o1777);
    file_as(&user, &root.join("home/alice/notes"), "hi\n", 0o640);
    symlink_as(&user, "../usr/bin/su", &root.join("etc/su-link"));
    let listing = |img: &Path| -> BTreeMap<String, String> {
        Inspected::of(&user, img)
            .entries
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    format!(
                        "{} {}:{} {} {}",
                        e["mode"], e["uid"], e["gid"], e["size"], e["symlink_target"]
                    ),
                )
            })
            .collect()
    };
    let layout = ["--subvol", "@:/:default", "--subvol", "@home:/home"];
    let with_ns = tmp.path().join("ns.img");
    let a: Vec<&str> = [&["--rootfs", s(&root), "-o", s(&with_ns)][..], &layout[..]].concat();
    build_json(&user, &a);
    let without = tmp.path().join("direct.img");
    let b: Vec<&str> = [
        &["--rootfs", s(&root), "--no-userns", "-o", s(&without)][..],
        &layout[..],
    ]
    .concat();
    let r = build_json(&user, &b);
    assert_eq!(
        r["binds"], 0,
        "nothing can be bound without a namespace: {r:#}"
    );
    let (x, y) = (listing(&with_ns), listing(&without));
    assert_eq!(
        x, y,
        "the same tree must list the same with and without a user namespace"
    );
    assert_eq!(
        x["@/usr/bin/su"].split(' ').next(),
        Some("35309"),
        "setuid kept (0o104755)"
    );
    if can_mount() {
        assert_btrfs_check(&without);
    }
}

#[test]
fn subrange_maps_a_tree_numbered_like_mmdebstrap() {
    let user = setup();
    if !is_root() {
        skip!("chowning a tree into the subordinate range needs root");
    }
    let Some(((ustart, _), (gstart, _))) = have_subids(&user) else {
        skip!(
            "{} has no subordinate ranges or newuidmap is missing",
            user.name
        );
    };
    // mmdebstrap --mode=unshare: the tree's root is the range's first id,
    // its uid k is start + k; nothing belongs to the caller.
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    for (p, mode, uid, gid) in [
        ("etc/shadow", 0o640, 0, 42),
        ("etc/passwd", 0o644, 0, 0),
        ("home/alice/.ssh/authorized_keys", 0o600, 1000, 1000),
        ("var/cache/apt/archives/partial/.keep", 0o600, 42, 0),
    ] {
        let f = root.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        file_owned(&f, b"x\n", mode, ustart + uid, gstart + gid);
    }
    for (d, mode, uid, gid) in [
        ("", 0o755, 0, 0),
        ("etc", 0o755, 0, 0),
        ("home", 0o755, 0, 0),
        ("home/alice", 0o755, 1000, 1000),
        ("home/alice/.ssh", 0o700, 1000, 1000),
        ("var", 0o755, 0, 0),
        ("var/cache", 0o755, 0, 0),
        ("var/cache/apt", 0o755, 0, 0),
        ("var/cache/apt/archives", 0o755, 0, 0),
        ("var/cache/apt/archives/partial", 0o700, 42, 0),
    ] {
        let p = root.join(d);
        lchown(&p, Some(ustart + uid), Some(gstart + gid)).unwrap();
        chmod(&p, mode);
    }
    let img = tmp.path().join("mm.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&root),
            "--subvol",
            "@:/:default",
            "--subvol",
            "@home:/home",
            "--map",
            "subrange",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["map"], "subrange", "{r:#}");
    assert_eq!(r["copied_bytes"], 0, "{r:#}");
    let ins = Inspected::of(&user, &img);
    let owner = |p: &str| {
        let e = ins.get(p);
        (e["uid"].as_u64().unwrap(), e["gid"].as_u64().unwrap())
    };
    assert_eq!(owner("@/etc/shadow"), (0, 42));
    assert_eq!(owner("@/etc"), (0, 0));
    assert_eq!(owner("@home/alice"), (1000, 1000));
    assert_eq!(owner("@home/alice/.ssh/authorized_keys"), (1000, 1000));
    assert_eq!(owner("@/var/cache/apt/archives/partial"), (42, 0));
    let m = fs::metadata(&img).unwrap();
    assert_eq!(m.mode() & 0o777, 0o644, "the published image is 0644 again");
    if can_mount() {
        assert_btrfs_check(&img);
    }
}

// Bad input is refused with an error naming it and the fix, and leaves
// nothing at the output path; `--force` replaces an existing output.

// ---- errors ------------------------------------------------------------------------

#[test]
fn size_too_small_is_refused_with_the_size_needed() {
    let user = setup();
    let c = ErrCase::new(&user);
    // ~200 MB in four fully written files.
    for i in 0u8..4 {
        file_as(
            &user,
            &c.root.join(format!("data/blob{i}")),
            vec![0xa5u8 ^ i; 50 << 20],
            0o644,
        );
    }
    let img = c.out_dir.join("small.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--size",
            "120M",
            "-o",
            s(&img),
        ],
    );
    let size = fs::metadata(&img).map(|m| m.len()).ok();
    assert_ne!(
        out.code(),
        Some(0),
        "--size 120M cannot hold 200 MB, yet the build succeeded (image of {size:?} bytes):\n{out}"
    );
    out.assert_stderr_contains("too small");
    assert!(
        out.stderr.contains("needs") || out.stderr.contains("at least"),
        "the message should say how much is needed:\n{out}"
    );
    assert_nothing_written(&img, &[], &out);
}

#[test]
fn missing_or_non_directory_rootfs_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("x.img");
    let missing = c.tmp.path().join("no-such-root");
    let out = build(
        &user,
        &["--rootfs", s(&missing), "--subvol", "@:/", "-o", s(&img)],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&missing));
    assert_nothing_written(&img, &[], &out);

    let file = c.tmp.path().join("rootfs-file");
    write_as(&user, &file, "not a directory");
    let out = build(
        &user,
        &["--rootfs", s(&file), "--subvol", "@:/", "-o", s(&img)],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&file));
    out.assert_stderr_contains("not a directory");
    assert_nothing_written(&img, &[], &out);
}

#[test]
fn store_path_outside_the_store_dir_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let closure = user_closure(&user, c.tmp.path());
    let list = c.tmp.path().join("paths.txt");
    write_as(&user, &list, format!("{}\n/etc\n", s(&closure.path(0))));
    let img = c.out_dir.join("x.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--closure",
            s(&list),
            "--store-dir",
            s(&closure.store),
            "--subvol",
            "@:/",
            "-o",
            s(&img),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("/etc");
    out.assert_stderr_contains(s(&list));
    out.assert_stderr_contains(s(&closure.store));
    assert_nothing_written(&img, &[], &out);
}

/// A directory holding an executable `mkfs.btrfs` shell script.
fn fake_mkfs(user: &User, dir: &Path, script: &str) -> PathBuf {
    let bin = dir.join("fake-bin");
    dir_as(user, &bin);
    file_as(
        user,
        &bin.join("mkfs.btrfs"),
        format!("#!/bin/sh\n{script}"),
        0o755,
    );
    bin
}

fn path_with(bin: &Path) -> String {
    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", s(bin))
}

#[test]
fn mkfs_btrfs_too_old_is_refused_with_the_remedy() {
    let user = setup();
    let c = ErrCase::new(&user);
    let bin = fake_mkfs(
        &user,
        c.tmp.path(),
        "echo 'mkfs.btrfs, part of btrfs-progs v6.2'\necho ran >> \"$0.ran\"\nexit 0\n",
    );
    let img = c.out_dir.join("x.img");
    let out = run(rootbox(&user).env("PATH", path_with(&bin)).args([
        "build",
        "--rootfs",
        s(&c.root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("6.12");
    out.assert_stderr_contains("6.2");
    out.assert_stderr_contains("bookworm-backports");
    assert_nothing_written(&img, &[], &out);
    assert_eq!(
        fs::read_to_string(bin.join("mkfs.btrfs.ran")).unwrap_or_default(),
        "ran\n",
        "only `mkfs.btrfs --version` may run"
    );
}

#[test]
fn mkfs_btrfs_failure_is_reported_with_its_output() {
    let user = setup();
    let c = ErrCase::new(&user);
    let bin = fake_mkfs(
        &user,
        c.tmp.path(),
        "case \"$1\" in --version) echo 'mkfs.btrfs, part of btrfs-progs v6.14'; exit 0;; esac\n\
         echo 'ERROR: simulated mkfs failure' >&2\nexit 1\n",
    );
    let img = c.out_dir.join("x.img");
    let out = run(rootbox(&user).env("PATH", path_with(&bin)).args([
        "build",
        "--rootfs",
        s(&c.root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("mkfs.btrfs failed");
    out.assert_stderr_contains("simulated mkfs failure");
    assert_nothing_written(&img, &[], &out);
}

#[test]
fn existing_output_is_left_untouched_without_force() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("x.img");
    write_as(&user, &img, "precious old content");
    let before = fs::metadata(&img).expect("stat").ino();
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&img));
    out.assert_stderr_contains("--force");
    assert_eq!(
        fs::read_to_string(&img).expect("read"),
        "precious old content"
    );
    assert_eq!(fs::metadata(&img).expect("stat").ino(), before);
    assert_eq!(names_in(&c.out_dir), ["x.img".to_string()].into(), "{out}");
}

#[test]
fn output_that_is_a_directory_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("a-dir");
    dir_as(&user, &img);
    file_as(&user, &img.join("keep"), "keep", 0o644);
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
            "--force",
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&img));
    out.assert_stderr_contains("directory");
    assert_eq!(names_in(&img), ["keep".to_string()].into());
    assert_eq!(names_in(&c.out_dir), ["a-dir".to_string()].into(), "{out}");
}

#[test]
fn output_inside_the_rootfs_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let before = names_in(&c.root.join("etc"));
    let img = c.root.join("etc/self.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&img));
    out.assert_stderr_contains("inside");
    assert!(fs::symlink_metadata(&img).is_err(), "{out}");
    assert_eq!(names_in(&c.root.join("etc")), before, "{out}");
}

// ---- --force -------------------------------------------------------------------------

#[test]
fn force_replaces_an_existing_output_with_a_new_file() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("x.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--label",
            "first",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["label"], "first");
    let old = fs::metadata(&img).expect("stat").ino();
    // Keep the old file reachable: an in-place rewrite would show through it.
    let old_link = c.tmp.path().join("old.img");
    fs::hard_link(&img, &old_link).expect("ln");

    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--label",
            "second",
            "--force",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["label"], "second", "{r:#}");
    let new = fs::metadata(&img).expect("stat");
    assert_ne!(
        new.ino(),
        old,
        "--force must replace the file, not rewrite it"
    );
    assert_eq!(new.len(), r["size_bytes"].as_u64().unwrap());
    assert_eq!(
        names_in(&c.out_dir),
        ["x.img".to_string()].into(),
        "no stray files"
    );
    let ins = Inspected::of(&user, &img);
    assert_eq!(ins.doc["filesystem"]["label"], "second");
    ins.get("@/etc/hostname");
    assert_eq!(
        Inspected::of(&user, &old_link).doc["filesystem"]["label"],
        "first"
    );
    assert_btrfs_check(&img);
}

// The `--json` result has the documented fields.

// ---- the JSON result --------------------------------------------------------------

#[test]
fn json_result_has_the_documented_fields() {
    let user = setup();
    let c = ErrCase::new(&user);
    file_as(&user, &c.root.join("home/bob/file"), "bob\n", 0o644);
    let img = c.out_dir.join("x.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--subvol",
            "@home:/home",
            "--uuid",
            UUID,
            "--label",
            "jsonlabel",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["image"], s(&img), "{r:#}");
    assert_eq!(
        r["size_bytes"].as_u64(),
        Some(fs::metadata(&img).unwrap().len()),
        "{r:#}"
    );
    assert!(r["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(r["uuid"], UUID, "{r:#}");
    assert_eq!(r["label"], "jsonlabel", "{r:#}");
    assert_eq!(r["verified"], true, "{r:#}");
    let subvols = r["subvolumes"].as_array().expect("subvolumes");
    assert_eq!(subvols.len(), 2, "{r:#}");
    for sv in subvols {
        for f in ["name", "mountpoint"] {
            assert!(sv[f].is_string(), "subvolume field {f}: {sv:#}");
        }
        for f in ["id", "entries", "bytes"] {
            assert!(sv[f].is_u64(), "subvolume field {f}: {sv:#}");
        }
        assert!(sv["entries"].as_u64().unwrap() >= 1, "{sv:#}");
    }
    let home = subvols
        .iter()
        .find(|s| s["name"] == "@home")
        .expect("@home");
    assert_eq!(
        home["entries"], 3,
        "bob, bob/file and the root of @home: {home:#}"
    );
    assert_eq!(home["bytes"], 4, "{home:#}");
    assert!(r["entries"].as_u64().unwrap() >= 6, "{r:#}");
    let t = &r["timings"];
    for f in ["plan", "stage", "copy", "mkfs", "verify", "total"] {
        let v = t[f]
            .as_f64()
            .unwrap_or_else(|| panic!("timings.{f} missing: {r:#}"));
        assert!(v >= 0.0, "timings.{f} = {v}");
    }
    assert!(t["total"].as_f64().unwrap() >= t["mkfs"].as_f64().unwrap());
    assert!(
        r["warnings"].is_array() && r["left_out"].is_array(),
        "{r:#}"
    );
    assert!(
        r["registration"].is_null(),
        "no closure, no registration: {r:#}"
    );
    // The uuid is the image's.
    let ins = Inspected::of(&user, &img);
    assert_eq!(ins.doc["filesystem"]["fsid"], UUID);
    assert_eq!(ins.doc["filesystem"]["label"], "jsonlabel");
}

// Two `--reproducible` builds of two copies of a tree are byte-identical.

#[test]
fn reproducible_builds_of_two_copies_are_byte_identical() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let disk = tmp.path().join("disk/root");
    for i in 0..40 {
        file_as(
            &user,
            &disk.join(format!("usr/share/doc/f{i:02}")),
            format!("file {i}\n"),
            0o644,
        );
    }
    file_as(
        &user,
        &disk.join("etc/ssh/sshd_config"),
        "StrictModes yes\n",
        0o644,
    );
    file_as(&user, &disk.join("home/alice/notes"), "hi\n", 0o640);
    symlink_as(&user, "../usr/share/doc/f01", &disk.join("etc/doc-link"));
    // The second copy on another filesystem where possible (a tmpfs lists
    // directories in another order than ext4), else beside the first.
    let second = tmp.path().join("second");
    dir_as(&user, &second);
    let _mount = if is_root() {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs", s(&second)])
            .status()
            .unwrap();
        assert!(st.success());
        give_to(&user, &second);
        Some(Unmount(second.clone()))
    } else {
        None
    };
    let st = Command::new("cp")
        .args(["-a", s(&disk), s(&second)])
        .status()
        .unwrap();
    assert!(st.success());
    give_tree_to(&user, &second);
    let layout = ["--subvol", "@:/:default", "--subvol", "@home:/home"];
    let a = tmp.path().join("a.img");
    let b = tmp.path().join("b.img");
    let ra = build_json(
        &user,
        &[
            &["--reproducible", "--rootfs", s(&disk), "-o", s(&a)][..],
            &layout[..],
        ]
        .concat(),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rb = build_json(
        &user,
        &[
            &[
                "--reproducible",
                "--rootfs",
                s(&second.join("root")),
                "-o",
                s(&b),
            ][..],
            &layout[..],
        ]
        .concat(),
    );
    assert_eq!(
        ra["reproducible"]["seed"], rb["reproducible"]["seed"],
        "the seed must not depend on paths"
    );
    assert_eq!(ra["uuid"], rb["uuid"]);
    let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert!(
        x == y,
        "two reproducible builds differ ({} vs {} bytes)",
        x.len(),
        y.len()
    );
    assert_eq!(ra["verified"], true);
    if can_mount() {
        assert_btrfs_check(&a);
    }
    // Without --reproducible the same inputs give different images.
    let c = tmp.path().join("c.img");
    build_json(
        &user,
        &[&["--rootfs", s(&disk), "-o", s(&c)][..], &layout[..]].concat(),
    );
    assert!(
        fs::read(&c).unwrap() != x,
        "a plain build is not expected to be reproducible"
    );
}
