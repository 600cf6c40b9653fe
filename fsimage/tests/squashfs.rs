//! The squashfs reader against images the real mksquashfs makes from a
//! hostile tree (every compressor it reads, and uncompressed metadata),
//! each entry compared with lstat of the tree, and against corruption.

mod common;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;

use common::{can_run, compare, fresh, run, Blind, SEEN};
use rootbox_fsimage::{squashfs, Error};

fn made(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (dir, tree, img) = fresh("squashfs", 255);
    run(Command::new("mksquashfs")
        .arg(&tree)
        .arg(&img)
        .args(["-noappend", "-quiet", "-no-progress"])
        .args(args));
    (dir, tree, img)
}

#[test]
fn every_entry_reads_back_as_the_tree_has_it_with_every_compressor() {
    if !can_run("mksquashfs") {
        return;
    }
    for args in [
        &[][..],
        &["-comp", "zstd", "-Xcompression-level", "19"],
        &["-comp", "xz"],
        &["-comp", "lz4"],
        &["-comp", "lzo", "-noI", "-noD", "-noF", "-noX"],
        &["-comp", "gzip", "-no-xattrs"],
    ] {
        eprintln!("mksquashfs {args:?}");
        let (_dir, tree, img) = made(args);
        let entries = squashfs::read(&img).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        if args.contains(&"-no-xattrs") {
            assert!(entries
                .iter()
                .all(|e| e.xattrs.as_ref().unwrap().is_empty()));
            compare(
                &tree,
                &entries,
                Blind {
                    xattrs: true,
                    ..SEEN
                },
            );
        } else {
            compare(&tree, &entries, SEEN);
        }
        assert_eq!(
            squashfs::read_bytes(&fs::read(&img).unwrap()).unwrap(),
            entries
        );
        run(Command::new("unsquashfs").arg("-stat").arg(&img));
    }
}

#[test]
fn metadata_compressed_with_lzo_is_a_typed_refusal() {
    if !can_run("mksquashfs") {
        return;
    }
    let (_dir, _tree, img) = made(&["-comp", "lzo"]);
    let err = squashfs::read(&img).unwrap_err();
    assert!(
        matches!(err, Error::Compressor { name: "lzo", .. }),
        "{err}"
    );
}

#[test]
fn mutated_and_truncated_images_give_errors_never_panics() {
    if !can_run("mksquashfs") {
        return;
    }
    for args in [&["-noI", "-noD", "-noF", "-noX"][..], &[]] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let t = dir.path().join("t");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/f"), b"data").unwrap();
        fs::hard_link(t.join("a/f"), t.join("h")).unwrap();
        std::os::unix::fs::symlink("x".repeat(300), t.join("l")).unwrap();
        xattr::set(t.join("a/f"), "user.k", b"v").unwrap();
        let img = dir.path().join("i");
        run(Command::new("mksquashfs")
            .arg(&t)
            .arg(&img)
            .args(["-noappend", "-quiet", "-no-progress"])
            .args(args));
        let good = fs::read(&img).unwrap();
        if let Some(out) = std::env::var_os("ROOTBOX_WRITE_FUZZ_SEEDS") {
            let name = format!("squashfs{}", args.concat());
            fs::write(std::path::Path::new(&out).join(name), &good).unwrap();
        }
        assert!(squashfs::read_bytes(&good).is_ok());
        let mut panics = Vec::new();
        let mut try_one = |what: String, b: &[u8]| {
            if catch_unwind(AssertUnwindSafe(|| squashfs::read_bytes(b))).is_err() {
                panics.push(what);
            }
        };
        for at in 0..good.len() {
            for bit in [0u8, 5] {
                let mut b = good.clone();
                b[at] ^= 1 << bit;
                try_one(format!("{args:?} flip {at}:{bit}"), &b);
            }
        }
        for len in 0..good.len() {
            try_one(format!("{args:?} cut {len}"), &good[..len]);
        }
        assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
        // mksquashfs pads the image to 4 KiB; `bytes_used` (superblock
        // bytes 40-47) is where it ends.
        let used = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
        let r = squashfs::read_bytes(&good[..used - 1]);
        assert!(matches!(r, Err(Error::Truncated { .. })), "{r:?}");
    }
}

#[test]
fn an_image_inside_a_disk_reads_at_its_offset_as_by_itself() {
    if !can_run("mksquashfs") {
        return;
    }
    let (dir, _tree, img) = made(&[]);
    let (disk, at, len) = common::inside_a_disk(dir.path(), &img);
    assert_eq!(
        squashfs::read_at(&disk, at, len).unwrap(),
        squashfs::read(&img).unwrap()
    );
    // The junk before it is no squashfs filesystem.
    assert!(matches!(
        squashfs::read_at(&disk, 0, len),
        Err(Error::NotSquashfs)
    ));
}
