//! Hostile NixOS `fileSystems` JSON.

use super::*;

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
