//! A rootfs and a closure reach the image owned by root, with their modes,
//! links, xattrs and file capabilities; the impermanence layout (no root
//! subvolume) says what it left out.

use super::*;

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
