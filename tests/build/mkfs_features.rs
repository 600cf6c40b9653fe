//! What newer btrfs-progs offer, used where it helps: `--reflink`
//! (6.16.1), subvolume inode flags (`--inode-flags`, 6.15), and the
//! features mkfs enabled (block-group-tree by default since 6.19), each
//! reported in `--json`.
//!
//! The tests run with whatever mkfs.btrfs is first on PATH: a feature is
//! checked in the image when that mkfs has it, and its refusal (naming
//! the field and the version) when it has not; the other half prints a
//! NOTE line. CI runs the suite once with the host's 6.14 and once with
//! sid's 7.x first on PATH; that lane sets `ROOTBOX_EXPECT_MKFS_BTRFS`
//! (e.g. 6.19), and every test here then asserts the mkfs on PATH is at
//! least that version, so the newer branches are known to have run.

use super::*;

/// The version of the mkfs.btrfs on PATH, as (major, minor, patch); at
/// least `ROOTBOX_EXPECT_MKFS_BTRFS` when that is set (else a panic).
fn mkfs_version() -> (u32, u32, u32) {
    let out = run(Command::new("mkfs.btrfs").arg("--version"));
    out.assert_success();
    let word = out
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| panic!("no version in:\n{out}"));
    let v = parse_version(word);
    if let Some(want) = std::env::var("ROOTBOX_EXPECT_MKFS_BTRFS")
        .ok()
        .filter(|w| !w.is_empty())
    {
        assert!(
            v >= parse_version(&want),
            "ROOTBOX_EXPECT_MKFS_BTRFS={want}, but the mkfs.btrfs on PATH is {word}: \
             the branches of newer versions would not run\n{out}"
        );
    }
    v
}

/// "6.16.1" (or "6.19", "7.3-rc1") as (major, minor, patch).
fn parse_version(word: &str) -> (u32, u32, u32) {
    let nums: Vec<u32> = word
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    (
        nums[0],
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    )
}

/// A loop-mounted btrfs (root only), owned by `user`, unmounted and
/// removed when dropped.
struct LoopBtrfs {
    // Dropped in this order: unmounted, then removed.
    _mounted: Unmount,
    dir: tempfile::TempDir,
}

impl LoopBtrfs {
    fn new(user: &User) -> LoopBtrfs {
        let dir = tempfile::Builder::new()
            .prefix("rootbox-test-btrfs-")
            .tempdir_in("/var/tmp")
            .expect("a directory");
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&img).unwrap().set_len(1 << 30).unwrap();
        // The host's mkfs: this filesystem holds the test, it is not one.
        run(Command::new("/usr/sbin/mkfs.btrfs").args(["-q", s(&img)])).assert_success();
        run(Command::new("mount").args(["-o", "loop", s(&img), s(&mnt)])).assert_success();
        let mounted = Unmount(mnt.clone());
        give_to(user, &mnt);
        chmod(dir.path(), 0o755);
        LoopBtrfs {
            _mounted: mounted,
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("mnt").join(rel)
    }
}

/// A rootfs with a 1 MiB file (cloned, not inlined) in `root`.
fn rootfs_with_data(user: &User, root: &Path) {
    small_rootfs(user, root);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    file_as(user, &root.join("srv/data.bin"), data, 0o644);
}

#[test]
fn subvolume_inode_flags_reach_the_image_or_are_refused_on_old_mkfs() {
    let user = setup();
    let c = ErrCase::new(&user);
    file_as(&user, &c.root.join("swap/swapfile"), vec![0; 8192], 0o600);
    file_as(
        &user,
        &c.root.join("var/lib/vm/disk.raw"),
        vec![1; 8192],
        0o644,
    );
    let spec = c.tmp.path().join("spec.json");
    write_as(
        &user,
        &spec,
        r#"{"subvolumes": [
            {"name": "@", "mountpoint": "/", "type": "default"},
            {"name": "@swap", "mountpoint": "/swap", "inodeFlags": ["nodatacow"]},
            {"name": "@vm", "mountpoint": "/var/lib/vm", "inodeFlags": ["nodatasum"]}
        ]}"#,
    );
    let img = c.out_dir.join("flags.img");
    let args = ["--spec", s(&spec), "--rootfs", s(&c.root), "-o", s(&img)];
    let v = mkfs_version();
    if v < (6, 15, 0) {
        let out = build(&user, &args);
        assert_eq!(out.code(), Some(1), "{out}");
        for needle in ["\"inodeFlags\"", "--inode-flags", "6.15"] {
            out.assert_stderr_contains(needle);
        }
        assert_nothing_written(&img, &[], &out);
        note(format_args!(
            "the inode flags in the image not checked (mkfs.btrfs {v:?} < 6.15; its refusal \
             was): the sid lane checks them"
        ));
        return;
    }
    build_json(&user, &args);
    let i = Inspected::of(&user, &img);
    let flags = |key: &str| {
        let e = i.get(key);
        (
            e["flags"].as_u64().expect("flags"),
            strings(&e["inode_flags"]),
        )
    };
    // NODATACOW 0x2 implies NODATASUM 0x1 for the files that inherit it.
    assert_eq!(flags("@swap").0 & 0x2, 0x2, "{:?}", flags("@swap"));
    let (bits, names) = flags("@swap/swapfile");
    assert_eq!(bits & 0x3, 0x3, "{names:?}");
    assert!(names.contains(&"nodatacow".to_string()), "{names:?}");
    // nodatasum lands on the subvolume's root directory; mkfs 7.3, like
    // the kernel, passes only nodatacow on to new files.
    let (bits, names) = flags("@vm");
    assert_eq!(bits & 0x3, 0x1, "nodatasum only: {names:?}");
    assert_eq!(
        flags("@vm/disk.raw").0 & 0x2,
        0,
        "{:?}",
        flags("@vm/disk.raw")
    );
    assert_eq!(
        flags("@/etc/hostname").0 & 0x3,
        0,
        "the rest keeps CoW and checksums"
    );
    if can_mount() {
        let m = Mounted::new(&img, None);
        let out = run(Command::new("lsattr").args(["-d", s(&m.path().join("@swap/swapfile"))]));
        out.assert_success();
        let attrs = out.stdout.split_whitespace().next().unwrap_or("");
        assert!(attrs.contains('C'), "lsattr shows no C (nodatacow):\n{out}");
        let out = run(Command::new("lsattr").args(["-d", s(&m.path().join("@/etc/hostname"))]));
        assert!(
            !out.stdout
                .split_whitespace()
                .next()
                .unwrap_or("")
                .contains('C'),
            "{out}"
        );
    }
}

#[test]
fn the_report_names_the_features_mkfs_enabled() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("f.img");
    let r = build_json(
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
    let features = strings(&r["btrfs"]["mkfs_features"]);
    for f in ["extref", "skinny-metadata", "no-holes"] {
        assert!(
            features.contains(&f.to_string()),
            "{f} missing: {features:?}"
        );
    }
    // block-group-tree: the default since 6.19; kernels before 6.1
    // cannot mount it read-write.
    let bgt = features.contains(&"block-group-tree".to_string());
    assert_eq!(bgt, mkfs_version() >= (6, 19, 0), "{features:?}");
    let i = Inspected::of(&user, &img);
    assert_eq!(strings(&i.doc["filesystem"]["features"]), features);
}

#[test]
fn reflink_is_refused_or_skipped_on_a_filesystem_that_cannot_clone() {
    // /tmp (ext4 on these machines; a tmpfs elsewhere): no clones.
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("r.img");
    let base = [
        "--rootfs",
        s(&c.root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ];
    let r = build_json(&user, &base);
    assert_eq!(r["btrfs"]["reflink"]["mode"], "auto", "{r:#}");
    assert_eq!(r["btrfs"]["reflink"]["used"], false, "{r:#}");
    let why = r["btrfs"]["reflink"]["reason"].as_str().expect("a reason");
    let new = mkfs_version() >= (6, 16, 1);
    if new {
        assert!(why.contains("cannot clone"), "{why}");
    } else {
        assert!(why.contains("6.16.1 or newer"), "{why}");
    }
    fs::remove_file(&img).unwrap();
    let out = build(&user, &[&base[..], &["--reflink", "always"]].concat());
    assert_eq!(out.code(), Some(1), "{out}");
    out.assert_stderr_contains(if new { "cannot clone" } else { "6.16.1" });
    out.assert_stderr_contains("reflink");
    assert_nothing_written(&img, &[], &out);
    let out = build(&user, &[&base[..], &["--reflink", "sometimes"]].concat());
    assert_eq!(out.code(), Some(1), "{out}");
    out.assert_stderr_contains("expected auto, never or always");
}

#[test]
fn reflink_clones_the_data_when_sources_and_image_share_a_btrfs() {
    let user = setup();
    if !is_root() {
        skip!("reflink on a shared btrfs (making a loop btrfs needs root)");
    }
    if mkfs_version() < (6, 16, 1) {
        note(format_args!(
            "reflink on a shared btrfs not checked (mkfs.btrfs {:?} < 6.16.1; the refusal \
             is checked on /tmp): the sid lane checks it",
            mkfs_version()
        ));
        return;
    }
    let fs_ = LoopBtrfs::new(&user);
    let root = fs_.path("root");
    rootfs_with_data(&user, &root);
    // A closure too: its registration is staged in scratch space, on this
    // filesystem, not in the tmpfs mkfs cannot clone from.
    let closure = user_closure(&user, &fs_.path("src"));
    let out_dir = fs_.path("out");
    dir_as(&user, &out_dir);
    let img = out_dir.join("r.img");
    let mut args: Vec<String> = [
        "--rootfs",
        s(&root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ]
    .map(String::from)
    .to_vec();
    args.extend(closure.args());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = build_json(&user, &a);
    assert_eq!(r["btrfs"]["reflink"]["used"], true, "{r:#}");
    assert!(r["btrfs"]["reflink"]["reason"].is_null(), "{r:#}");
    // The 1 MiB file's extent is shared between the source and the image.
    let du = run(Command::new("btrfs").args(["filesystem", "du", "--raw", s(&img)]));
    du.assert_success();
    let shared: u64 = du
        .stdout
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shared bytes column:\n{du}"));
    assert!(shared >= 1 << 20, "only {shared} bytes shared:\n{du}");
    let i = Inspected::of(&user, &img);
    assert_eq!(i.get("@/srv/data.bin")["size"], 1 << 20);
    assert_btrfs_check(&img);
    let m = Mounted::new(&img, Some("@"));
    let want: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    assert!(
        fs::read(m.path().join("srv/data.bin")).unwrap() == want,
        "cloned data differs"
    );
    assert!(m.path().join("nix-path-registration").is_file());
    drop(m);

    // Compression wins in auto (cloned data would be uncompressed); never
    // copies; always with compression is refused.
    for (extra, reason) in [
        (&["--compress", "zstd"][..], "compression (zstd)"),
        (&["--reflink", "never"][..], "\"never\""),
    ] {
        let r = build_json(&user, &[&a[..], extra, &["--force"]].concat());
        assert_eq!(r["btrfs"]["reflink"]["used"], false, "{r:#}");
        let why = r["btrfs"]["reflink"]["reason"].as_str().expect("a reason");
        assert!(why.contains(reason), "{why}");
    }
    let out = build(
        &user,
        &[
            &a[..],
            &["--compress", "zstd", "--reflink", "always", "--force"],
        ]
        .concat(),
    );
    assert_eq!(out.code(), Some(1), "{out}");
    out.assert_stderr_contains("uncompressed");
}
