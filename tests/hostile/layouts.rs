//! Hostile subvolume names and mount points.

use super::*;

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
