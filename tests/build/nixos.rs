//! Layouts read from a NixOS `fileSystems` JSON (`--file-systems`), from
//! the fixtures in tests/fixtures/build/.

use super::*;

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
