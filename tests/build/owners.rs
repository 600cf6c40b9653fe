//! Who owns what in the image: a closure owned by ids the namespace does
//! not map, `--map subid` and `--map single`, the ownership manifest,
//! device nodes and set-id bits, `--no-userns`, and `--map subrange` on a
//! tree numbered like mmdebstrap's.

use super::*;

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
