//! Hostile symlinks in the rootfs, the store and the output path.

use super::*;

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
