//! The erofs reader and writer against deterministic mutations of a small
//! real image: a bit flipped at every few bytes of its metadata (with
//! the superblock checksum computed again, so the flip reaches past it)
//! and every truncation length on a grid. Each must end in `Ok` or a
//! typed error, never a panic. `ROOTBOX_WRITE_FUZZ_SEEDS=DIR` writes the
//! image to DIR as a seed for the fuzz target `erofs_image`.

mod common;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;

use common::{can_run, run};
use rootbox_fsimage::erofs::{self, At, Patch, XattrOrder};

/// A small image: a few directories, a long symlink, xattrs inline and
/// shared, a device, a hard link.
fn seed(args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(t.join("a/b")).unwrap();
    fs::write(t.join("a/f"), b"data").unwrap();
    fs::write(t.join("a/b/g"), vec![7u8; 5000]).unwrap();
    fs::hard_link(t.join("a/f"), t.join("h")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), t.join("l")).unwrap();
    for f in ["a/f", "a/b/g", "a"] {
        xattr::set(t.join(f), "user.shared", b"same value").unwrap();
    }
    xattr::set(t.join("a/b/g"), "user.own", b"v").unwrap();
    run(Command::new("mknod")
        .arg(t.join("null"))
        .args(["c", "1", "3"]));
    let img = dir.path().join("i");
    run(Command::new("mkfs.erofs")
        .args(["--quiet", "-T0", "-x1"])
        .args(args)
        .arg(&img)
        .arg(&t));
    let b = fs::read(&img).unwrap();
    if let Some(out) = std::env::var_os("ROOTBOX_WRITE_FUZZ_SEEDS") {
        let name = format!("erofs{}", args.concat());
        fs::write(std::path::Path::new(&out).join(name), &b).unwrap();
    }
    b
}

/// Sets the superblock checksum of `b` to match its bytes.
fn fix_checksum(b: &mut [u8]) {
    let end = b.len().min(4096);
    if end < 1024 + 128 {
        return;
    }
    b[1028..1032].fill(0);
    let crc = !crc32c::crc32c(&b[1024..end]);
    b[1028..1032].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn mutated_and_truncated_images_give_errors_never_panics() {
    if !can_run("mkfs.erofs") {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut runs = 0;
    let mut failures = Vec::new();
    for args in [&[][..], &["-Eforce-inode-extended"]] {
        let good = seed(args);
        assert!(erofs::read_bytes(&good).is_ok());
        let meta_end = good.len().min(3 * 4096);
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for at in (1024..meta_end).step_by(3) {
            for bit in [0u8, 3, 7] {
                let mut b = good.clone();
                b[at] ^= 1 << bit;
                fix_checksum(&mut b);
                cases.push((format!("{args:?} flip byte {at} bit {bit}"), b));
            }
        }
        for len in (0..good.len()).step_by(97) {
            cases.push((format!("{args:?} cut at {len}"), good[..len].to_vec()));
        }
        for (k, (what, b)) in cases.iter().enumerate() {
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| erofs::read_bytes(b))).is_err() {
                failures.push(format!("read: {what}"));
            }
            // The writer too, on every 16th case (it writes a file).
            if k % 16 == 0 {
                let img = dir.path().join("m");
                fs::write(&img, b).unwrap();
                let p = [Patch {
                    at: At::Path(b"/a/f".to_vec()),
                    uid: Some(1),
                    gid: Some(2),
                    mode: None,
                    device: None,
                    user_to_security: None,
                }];
                let r = catch_unwind(|| erofs::apply(&img, &p, XattrOrder::ByName));
                if r.is_err() {
                    failures.push(format!("apply: {what}"));
                }
            }
        }
    }
    eprintln!("{runs} mutated images read");
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}
