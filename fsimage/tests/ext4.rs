//! The ext4 reader against images the real `mkfs.ext4 -d` makes from a
//! hostile tree (4 KiB and 1 KiB blocks, 64bit and metadata_csum on and
//! off, xattrs in the inode and in xattr blocks), each entry compared
//! with lstat of the tree, checked by `e2fsck -fn`, and against
//! corruption.

mod common;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;

use common::{can_run, compare, fresh, run, SEEN};
use rootbox_fsimage::{ext4, Entry, Error};

fn made(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (dir, tree, img) = fresh("ext4", 255);
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .args(args)
        .arg(&img));
    run(Command::new("e2fsck").arg("-fn").arg(&img));
    (dir, tree, img)
}

/// The image's entries as the tree has them: mkfs.ext4 adds
/// `lost+found`, which also counts as a link of the root.
fn without_lost_found(mut entries: Vec<Entry>) -> Vec<Entry> {
    let before = entries.len();
    entries.retain(|e| e.path != b"/lost+found");
    assert_eq!(before - 1, entries.len(), "no /lost+found was read");
    entries[0].nlink -= 1;
    entries
}

#[test]
fn every_entry_reads_back_as_the_tree_has_it_in_every_layout() {
    if !can_run("mkfs.ext4") {
        return;
    }
    for args in [
        &[][..],
        &["-b", "1024", "-O", "^metadata_csum,^64bit"],
        &["-I", "128"],
        &["-b", "2048", "-O", "^has_journal"],
    ] {
        eprintln!("mkfs.ext4 {args:?}");
        let (_dir, tree, img) = made(args);
        let entries = ext4::read(&img).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(ext4::read_bytes(&fs::read(&img).unwrap()).unwrap(), entries);
        compare(&tree, &without_lost_found(entries), SEEN);
    }
}

#[test]
fn a_flipped_superblock_byte_is_a_checksum_error_and_mutations_never_panic() {
    if !can_run("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(t.join("a/b")).unwrap();
    fs::write(t.join("a/f"), b"data").unwrap();
    fs::hard_link(t.join("a/f"), t.join("h")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), t.join("l")).unwrap();
    xattr::set(t.join("a/f"), "user.k", b"v").unwrap();
    let img = dir.path().join("i");
    fs::File::create(&img).unwrap().set_len(1 << 20).unwrap();
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "1024",
            "-N",
            "32",
            "-O",
            "^has_journal",
            "-d",
        ])
        .arg(&t)
        .arg(&img));
    let good = fs::read(&img).unwrap();
    assert!(ext4::read_bytes(&good).is_ok());
    let mut bad = good.clone();
    bad[1024 + 0x20] ^= 1;
    assert!(matches!(
        ext4::read_bytes(&bad),
        Err(Error::Ext4SuperblockChecksum { .. })
    ));
    let r = ext4::read_bytes(&good[..good.len() - 1]);
    assert!(matches!(r, Err(Error::Truncated { .. })), "{r:?}");
    // Flips in the metadata (the first 64 KiB: superblock, descriptors,
    // bitmaps, inode table, directories), with the superblock checksum
    // computed again so each flip reaches past it.
    let mut panics = Vec::new();
    for at in (0..good.len().min(64 << 10)).step_by(7) {
        let mut b = good.clone();
        b[at] ^= 0x11;
        let crc = !crc32c::crc32c(&b[1024..1024 + 0x3FC]);
        b[1024 + 0x3FC..1024 + 0x400].copy_from_slice(&crc.to_le_bytes());
        if catch_unwind(AssertUnwindSafe(|| ext4::read_bytes(&b))).is_err() {
            panics.push(format!("flip {at}"));
        }
    }
    for len in (0..good.len()).step_by(509) {
        if catch_unwind(|| ext4::read_bytes(&good[..len])).is_err() {
            panics.push(format!("cut {len}"));
        }
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}

#[test]
fn times_read_back_with_and_without_extra_fields() {
    if !can_run("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let t = dir.path().join("t");
    fs::create_dir(&t).unwrap();
    let f = t.join("f");
    fs::write(&f, b"x").unwrap();
    let at = |seconds, nanoseconds| ext4::Time {
        seconds,
        nanoseconds,
    };
    // 256-byte inodes hold `_extra` fields and crtime; 128-byte ones do
    // not. mkfs.ext4 1.47 copies whole seconds (and no times at all into
    // 128-byte inodes), so the times are set with debugfs, mtime_extra
    // with nanoseconds and one epoch bit (2^32 seconds later). `@`: else
    // debugfs reads 1234567890 as a date (YYYYMMDDHHMM).
    for inode_size in ["256", "128"] {
        let img = dir.path().join(format!("i{inode_size}"));
        fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", inode_size, "-d"])
            .arg(&t)
            .arg(&img));
        let wide = inode_size == "256";
        let mut set = "set_inode_field /f atime @1234567890\n\
                       set_inode_field /f mtime @1234567890\n"
            .to_string();
        if wide {
            set += &format!("set_inode_field /f mtime_extra {}\n", 123_456_789 << 2 | 1);
        }
        let cmds = dir.path().join("cmds");
        fs::write(&cmds, set).unwrap();
        run(Command::new("debugfs")
            .args(["-w", "-f"])
            .arg(&cmds)
            .arg(&img));
        let entries = ext4::read(&img).unwrap();
        let ino = entries.iter().find(|e| e.path == b"/f").unwrap().ino;
        let times = ext4::times(&img).unwrap();
        let (_, got) = times.iter().find(|(i, _)| *i == ino).unwrap();
        let mtime = match wide {
            true => at(1_234_567_890 + (1 << 32), 123_456_789),
            false => at(1_234_567_890, 0),
        };
        assert_eq!(got.atime, at(1_234_567_890, 0), "-I {inode_size}");
        assert_eq!(got.mtime, mtime, "-I {inode_size}");
        assert_eq!(got.crtime.is_some(), wide, "-I {inode_size}");
        assert!(times.iter().any(|(i, _)| *i == 2), "the root");
        let mut inos: Vec<u64> = entries.iter().map(|e| e.ino).collect();
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(times.iter().map(|t| t.0).collect::<Vec<_>>(), inos);
    }
}

#[test]
fn an_image_inside_a_disk_reads_at_its_offset_as_by_itself() {
    if !can_run("mkfs.ext4") {
        return;
    }
    let (dir, _tree, img) = made(&[]);
    let (disk, at, len) = common::inside_a_disk(dir.path(), &img);
    assert_eq!(
        ext4::read_at(&disk, at, len).unwrap(),
        ext4::read(&img).unwrap()
    );
    // The junk before it is no ext4 filesystem.
    assert!(matches!(ext4::read_at(&disk, 0, len), Err(Error::NotExt4)));
}
