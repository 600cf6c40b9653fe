//! Hostile rootfs inputs: unreadable files, files of ids the namespace
//! does not map, odd roots.

use super::*;

// ---- the rootfs ----------------------------------------------------------------------

fn rootfs_cases() -> Vec<Case> {
    vec![
        fails(
            "missing rootfs",
            &[
                "rootfs",
                "no-such-dir",
                "No such file",
                "give an existing directory",
            ],
            |fx| {
                args(&[
                    "--rootfs",
                    s(&fx.path("src/no-such-dir")),
                    "--subvol",
                    "@:/",
                ])
            },
        ),
        fails(
            "rootfs is a file",
            &["rootfs", "is not a directory", "--rootfs"],
            |fx| {
                let f = fx.path("src/rootfile");
                write_as(&fx.user, &f, "not a dir");
                args(&["--rootfs", s(&f), "--subvol", "@:/"])
            },
        ),
        fails(
            "neither rootfs nor closure",
            &["nothing to put in the image", "--rootfs DIR"],
            |_| args(&["--subvol", "@:/"]),
        ),
        // The test user owns the file: in the namespace it is root's, and
        // root reads a mode-000 file (CAP_DAC_OVERRIDE applies to ids the
        // namespace maps). Correct: the image keeps the file, its content
        // and its mode 000 (as /etc/shadow is on some distributions).
        builds(
            "a mode-000 file of the caller",
            |fx| {
                fx.file("etc/shadow", "secret\n");
                fs::set_permissions(
                    fx.root().join("etc/shadow"),
                    fs::Permissions::from_mode(0o000),
                )
                .unwrap();
                std_args(fx)
            },
            |fx, b| {
                let e = b.expect("@", "etc/shadow");
                assert_eq!(e["mode"].as_u64().unwrap() & 0o7777, 0, "{e}");
                assert_eq!(e["size"], 7);
                let r = restore(fx);
                let p = r.join("@/etc/shadow");
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).ok();
                assert_eq!(fs::read(&p).unwrap(), b"secret\n");
            },
        ),
        // Likewise a mode-000 directory of the caller: the plan is made
        // inside the namespace, where root reads it; the image keeps it,
        // its mode and its content.
        builds(
            "a mode-000 directory of the caller",
            |fx| {
                fx.file("locked/inner", "x");
                fs::set_permissions(fx.root().join("locked"), fs::Permissions::from_mode(0o000))
                    .unwrap();
                std_args(fx)
            },
            |_, b| {
                let d = b.expect("@", "locked");
                assert_eq!(d["mode"].as_u64().unwrap() & 0o7777, 0, "{d}");
                assert_eq!(b.expect("@", "locked/inner")["size"], 1);
            },
        ),
        fails(
            "a 0600 file owned by another uid",
            &[
                "cannot read",
                "src/root/etc/private",
                "Permission denied",
                "readable to you",
            ],
            |fx| {
                fx.file("etc/private", "not yours\n");
                stranger_owns(fx, "etc/private", 0o600);
                std_args(fx)
            },
        ),
        fails(
            "a 0700 directory owned by another uid",
            &["cannot read directory", "var/secret", "Permission denied"],
            |fx| {
                fx.file("var/secret/f", "x");
                stranger_owns(fx, "var/secret/f", 0o644);
                stranger_owns(fx, "var/secret", 0o700);
                std_args(fx)
            },
        ),
        builds(
            "a readable file owned by another uid becomes root's",
            |fx| {
                fx.file("etc/motd", "hello\n");
                stranger_owns(fx, "etc/motd", 0o644);
                std_args(fx)
            },
            |_, b| {
                let e = b.expect("@", "etc/motd");
                assert_eq!(
                    (e["uid"].as_u64(), e["gid"].as_u64()),
                    (Some(0), Some(0)),
                    "{e}"
                );
                assert_eq!(e["size"], 6);
            },
        ),
    ]
}

/// chown STRANGER:STRANGER and chmod `mode` (root only; the case fails
/// with a clear message otherwise).
fn stranger_owns(fx: &Fx, rel: &str, mode: u32) {
    assert!(is_root(), "this case needs root to chown to another uid");
    let p = fx.root().join(rel);
    std::os::unix::fs::lchown(&p, Some(STRANGER), Some(STRANGER)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn rootfs_inputs() {
    if !is_root() {
        skip!("the rootfs cases chown files to other uids: run as root (CI does)");
    }
    run_table(rootfs_cases());
}
