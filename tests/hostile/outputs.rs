//! Hostile output paths.

use super::*;

// ---- the output path --------------------------------------------------------------

fn output_cases() -> Vec<Case> {
    vec![
        fails(
            "output inside the rootfs",
            &["is inside", "staged into the image", "write it elsewhere"],
            |fx| {
                fx.mkdir("boot");
                *fx.output.borrow_mut() = fx.root().join("boot/image.img");
                std_args(fx)
            },
        ),
        fails(
            "output inside a store path",
            &["is inside", "hello", "would contain itself"],
            |fx| {
                fx.file("etc/x", "x");
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                *fx.output.borrow_mut() = p.join("bin/image.img");
                let mut a = std_args(fx);
                a.extend(args(&["--closure", s(&ci), "--store-dir", s(&fx.store())]));
                a
            },
        ),
        fails(
            "output is a directory",
            &["is a directory", "path of the image file"],
            |fx| {
                create_dirs_as(&fx.user, &fx.path("out/image.img"));
                std_args(fx)
            },
        ),
        fails(
            "existing image without --force",
            &["exists: use --force"],
            |fx| {
                write_as(&fx.user, &fx.image(), "the previous image");
                fx.file("etc/x", "x");
                std_args(fx)
            },
        ),
        fails(
            "a dangling symlink at the output without --force",
            &["exists: use --force"],
            |fx| {
                symlink_as(&fx.user, "/nonexistent-target", &fx.image());
                std_args(fx)
            },
        ),
        builds(
            "existing image with --force is replaced",
            |fx| {
                write_as(&fx.user, &fx.image(), "the previous image");
                fx.file("etc/x", "new");
                let mut a = std_args(fx);
                a.push("--force".into());
                a
            },
            |fx, b| {
                assert_eq!(b.expect("@", "etc/x")["size"], 3);
                assert!(fs::metadata(fx.image()).unwrap().len() > 1 << 20);
            },
        ),
        builds(
            "--force replaces a symlink, not its target",
            |fx| {
                let victim = fx.path("victim");
                write_as(&fx.user, &victim, "keep me");
                symlink_as(&fx.user, &victim, &fx.image());
                fx.file("etc/x", "x");
                let mut a = std_args(fx);
                a.push("--force".into());
                a
            },
            |fx, _| {
                assert_eq!(fs::read(fx.path("victim")).unwrap(), b"keep me");
                assert!(fs::symlink_metadata(fx.image()).unwrap().is_file());
            },
        ),
        fails(
            "output directory missing",
            &["does-not-exist", "create it first"],
            |fx| {
                *fx.output.borrow_mut() = fx.path("out/does-not-exist/image.img");
                std_args(fx)
            },
        ),
        fails("no output given", &["no output given", "-o IMAGE"], |fx| {
            *fx.output.borrow_mut() = PathBuf::new();
            std_args(fx)
        }),
        fails(
            "output on a full filesystem",
            &[
                "no space left for the image",
                "/full",
                "bytes free",
                "write the image elsewhere",
            ],
            |fx| {
                assert!(fx.tmpfs("full", "8m"), "needs root to mount a small tmpfs");
                let full = fx.path("full");
                // 24 MiB of incompressible data.
                let mut data = vec![0u8; 24 << 20];
                let mut x: u64 = 0x9e3779b97f4a7c15;
                for c in data.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
                }
                write_as(&fx.user, &fx.root().join("big"), data);
                *fx.output.borrow_mut() = full.join("image.img");
                std_args(fx)
            },
        ),
    ]
}

#[test]
fn output_paths() {
    let mut cases = output_cases();
    if !is_root() {
        skipped(format_args!(
            "the full-filesystem case mounts a tmpfs: run as root (CI does)"
        ));
        cases.retain(|c| c.name != "output on a full filesystem");
    }
    run_table(cases);
}
