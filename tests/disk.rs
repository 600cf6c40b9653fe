//! Integration tests of `rootbox disk`, as the unprivileged
//! test user: the examples read back with the real partitioning and
//! filesystem tools (sfdisk --json, sgdisk -v, fsck.vfat -n, btrfs check,
//! rootbox inspect on the extracted partition), a block map written with
//! the real `bmaptool copy`, reproducible disks from two copies of the
//! inputs on different filesystems, the largest build's own file made
//! the disk on ext4/XFS (byte for byte the disk a copy makes on a tmpfs),
//! hostile specs and SIGKILL during assembly and builds — each leaving
//! nothing at the output path, and scratch only the next disk sweeps.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn setup() -> User {
    let user = test_user();
    assert_unprivileged(&user);
    user
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a failed or killed run may not leave in the output directory.
#[track_caller]
fn assert_nothing_left(dir: &Path, output: &Path) {
    assert!(!output.exists(), "{} exists", output.display());
    let left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rootbox") || n.contains("rootbox-tmp"))
        .collect();
    assert!(
        left.is_empty(),
        "scratch left in {}: {left:?}",
        dir.display()
    );
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// sfdisk's view of a disk image.
fn sfdisk(image: &Path) -> Value {
    let out = run(Command::new("sfdisk").arg("--json").arg(image));
    out.assert_success();
    json(&out)["partitiontable"].clone()
}

/// Copies `len` bytes at `offset` of `image` to `to` (what `dd skip=`
/// does), keeping holes.
fn extract(image: &Path, offset: u64, len: u64, to: &Path) {
    let out = run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=512", "conv=sparse,excl", "status=none"])
        .arg(format!("skip={}", offset / 512))
        .arg(format!("count={}", len / 512)));
    out.assert_success();
}

/// Every partition of the report is where sfdisk sees it, with the same
/// type, GUID, attributes and boot flag.
#[track_caller]
fn assert_sfdisk_agrees(image: &Path, report: &Value) {
    let t = sfdisk(image);
    let parts = t["partitions"].as_array().expect("partitions");
    let mine = report["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), mine.len(), "{t:#}");
    match report["table"].as_str().unwrap() {
        "gpt" => {
            assert_eq!(t["label"], "gpt");
            assert_eq!(t["id"].as_str(), report["disk_guid"].as_str());
        }
        _ => {
            assert_eq!(t["label"], "dos");
            assert_eq!(t["id"].as_str(), report["disk_id"].as_str());
        }
    }
    for (theirs, m) in parts.iter().zip(mine) {
        assert_eq!(theirs["start"], m["start_sector"], "{theirs} vs {m}");
        assert_eq!(theirs["size"], m["sectors"], "{theirs} vs {m}");
        if let Some(g) = m["type_guid"].as_str() {
            assert_eq!(theirs["type"].as_str(), Some(g), "{theirs}");
            assert_eq!(
                theirs["uuid"].as_str().map(str::to_lowercase).as_deref(),
                m["partuuid"].as_str()
            );
            assert_eq!(theirs["name"], m["name"]);
            let bootable = m["attributes"].as_u64().unwrap() & 4 != 0;
            assert_eq!(
                theirs["attrs"]
                    .as_str()
                    .is_some_and(|a| a.contains("LegacyBIOSBootable")),
                bootable,
                "{theirs}"
            );
        } else {
            let byte = m["mbr_type"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x")
                .trim_start_matches('0');
            assert_eq!(theirs["type"].as_str(), Some(byte), "{theirs}");
            assert_eq!(
                theirs["bootable"].as_bool().unwrap_or(false),
                m["bootable"].as_bool().unwrap()
            );
        }
    }
}

#[track_caller]
fn assert_sgdisk_clean(image: &Path) {
    if !have("sgdisk") {
        skipped(format_args!(
            "sgdisk missing (apt install gdisk): not cross-checked"
        ));
        return;
    }
    let out = run(Command::new("sgdisk").arg("-v").arg(image));
    out.assert_success();
    assert!(out.stdout.contains("No problems found"), "{out}");
}

/// Each partition extracted and checked with the tool of its filesystem.
fn check_partitions(user: &User, dir: &Path, image: &Path, report: &Value) {
    for p in report["partitions"].as_array().unwrap() {
        let (off, len) = (
            p["offset_bytes"].as_u64().unwrap(),
            p["filesystem_bytes"].as_u64().unwrap(),
        );
        let part = dir.join(format!("part{}", p["number"]));
        let _ = fs::remove_file(&part);
        match p["content"].as_str().unwrap() {
            "vfat" => {
                extract(image, off, len, &part);
                let out = run(Command::new("fsck.vfat").arg("-n").arg(&part));
                out.assert_success();
            }
            "btrfs" => {
                extract(image, off, len, &part);
                give_to(user, &part);
                let out = run(rootbox(user).args(["inspect", "--json", s(&part)]));
                out.assert_success();
                let v = json(&out);
                assert_eq!(
                    v["filesystem"]["fsid"].as_str(),
                    p["fs_uuid"].as_str(),
                    "{v:#}"
                );
                let names: Vec<&str> = v["subvolumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s["path"].as_str())
                    .collect();
                let wanted: Vec<&str> = p["build"]["subvolumes"]
                    .as_array()
                    .expect("the build's subvolumes")
                    .iter()
                    .map(|s| s["name"].as_str().unwrap())
                    .collect();
                assert!(!wanted.is_empty());
                for want in wanted {
                    assert!(names.contains(&want), "no subvolume {want}: {names:?}");
                }
                let out = run(Command::new("btrfs").args(["check", "--readonly", s(&part)]));
                out.assert_success();
                assert!(
                    (out.stdout.clone() + &out.stderr).contains("no error found"),
                    "{out}"
                );
            }
            _ => {}
        }
        let _ = fs::remove_file(&part);
    }
}

#[test]
fn the_examples_read_back_with_sfdisk_sgdisk_fsck_and_btrfs_check() {
    let user = setup();
    let dir = tempdir_for(&user);
    for name in ["rpi", "rock64", "uefi"] {
        let img = dir.path().join(format!("{name}.img"));
        let out = run(rootbox(&user).args(["disk", "--example", name, "--json", "-o", s(&img)]));
        out.assert_success();
        let r = json(&out);
        assert_eq!(r["verified"], true);
        assert_sfdisk_agrees(&img, &r);
        if r["table"] == "gpt" {
            assert_sgdisk_clean(&img);
        }
        check_partitions(&user, dir.path(), &img, &r);
        // Sparse: far fewer bytes allocated than the disk's size.
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&img).unwrap();
        assert!(
            m.blocks() * 512 < m.len() / 4,
            "{name}: {} of {} bytes allocated",
            m.blocks() * 512,
            m.len()
        );
        let inspect = run(rootbox(&user).args(["inspect", s(&img)]));
        inspect.assert_success();
        assert!(inspect.stdout.contains("disk "), "{inspect}");
        match name {
            "rpi" => {
                assert!(
                    inspect.stdout.contains("FAT, label \"FIRMWARE\""),
                    "{inspect}"
                );
                assert!(inspect.stdout.contains("/config.txt"), "{inspect}");
                assert_eq!(r["partitions"][0]["start_sector"], 16384);
                assert_eq!(r["partitions"][0]["bootable"], true);
                assert_eq!(r["partitions"][0]["mbr_type"], "0x0b");
                assert_eq!(r["partitions"][1]["partuuid"], "2178694e-02");
            }
            "rock64" => {
                assert_eq!(r["blobs"][0]["offset"], 64 * 512);
                assert_eq!(r["partitions"][0]["start_sector"], 16384);
                assert_eq!(r["partitions"][0]["sectors"], 16384);
                assert_eq!(r["partitions"][1]["start_sector"], 32768);
                assert_eq!(r["partitions"][1]["attributes"], 4);
                // The blob is at sector 64 of the disk, byte for byte.
                let disk = fs::read(&img).unwrap();
                let blob = &disk[64 * 512..64 * 512 + 100 * 1024];
                assert!(blob.iter().any(|&b| b != 0));
                assert!(
                    inspect
                        .stdout
                        .contains("partition 1: raw, 614400 bytes of data"),
                    "{inspect}"
                );
            }
            _ => {
                assert_eq!(
                    r["partitions"][0]["type_guid"],
                    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
                );
                assert_eq!(
                    r["partitions"][1]["type_guid"],
                    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
                );
                assert!(
                    inspect.stdout.contains("/EFI/BOOT/BOOTX64.EFI"),
                    "{inspect}"
                );
            }
        }
    }
}

/// The inputs of the spec tests: a FAT tree (subdirectories, a long and
/// non-ASCII name), a raw file, a blob, a small rootfs.
fn inputs(user: &User, dir: &Path) {
    write_as(user, &dir.join("boot/config.txt"), "arm_64bit=1\n");
    write_as(
        user,
        &dir.join("boot/EFI/BOOT/BOOTAA64.EFI"),
        vec![0x5Au8; 70_000],
    );
    write_as(
        user,
        &dir.join("boot/overlays/Überlay with a long name.dtbo"),
        "x",
    );
    write_as(user, &dir.join("uboot.itb"), vec![0xA5u8; 300_000]);
    write_as(user, &dir.join("idbloader.img"), vec![0x3Cu8; 50_000]);
    write_as(user, &dir.join("root/etc/hostname"), "disk-test\n");
    write_as(user, &dir.join("root/home/alice/notes"), "notes\n");
    write_as(
        user,
        &dir.join("root/nix/store/aaaa-x/bin/x"),
        "#!/bin/sh\n",
    );
}

const SPEC: &str = r#"{
  "table": "gpt",
  "alignment": "1K",
  "blobs": [{"file": "idbloader.img", "sector": 64, "maxSize": "8000K"}],
  "partitions": [
    {"name": "uboot", "startSector": 16384, "size": "8M", "type": "linux", "content": {"raw": "uboot.itb"}},
    {"name": "boot", "type": "esp", "content": {"fat": {"dir": "boot", "label": "BOOT"}}},
    {"name": "root", "type": "root-arm64", "attributes": ["legacy-bootable", 60],
     "content": {"btrfs": {"label": "root", "rootfs": "root", "subvolumes": [
        {"name": "@", "mountpoint": "/", "type": "default"}, {"name": "@nix", "mountpoint": "/nix"}]}}}
  ]
}"#;

fn make_disk(user: &User, dir: &Path, spec: &str, extra: &[&str]) -> (Out, PathBuf) {
    write_as(user, &dir.join("disk.json"), spec);
    let img = dir.join("out.img");
    let mut cmd = rootbox(user);
    cmd.args([
        "disk",
        "--spec",
        s(&dir.join("disk.json")),
        "--json",
        "-o",
        s(&img),
    ])
    .args(extra);
    (run(&mut cmd), img)
}

#[test]
fn a_disk_from_a_spec_holds_its_blob_raw_fat_and_btrfs_and_bmaptool_copies_it() {
    let user = setup();
    let dir = tempdir_for(&user);
    inputs(&user, dir.path());
    let bmap = dir.path().join("out.bmap");
    let (out, img) = make_disk(&user, dir.path(), SPEC, &["--bmap", s(&bmap)]);
    out.assert_success();
    let r = json(&out);
    assert_sfdisk_agrees(&img, &r);
    assert_sgdisk_clean(&img);
    check_partitions(&user, dir.path(), &img, &r);
    assert_eq!(r["partitions"][2]["attributes"], (1u64 << 60) | 4);
    // Mapped bytes stay near the content (the disk is sparse).
    let (mapped, content) = (
        r["mapped_bytes"].as_u64().unwrap(),
        r["content_bytes"].as_u64().unwrap(),
    );
    assert!(mapped < r["size_bytes"].as_u64().unwrap() / 4, "{r:#}");
    assert!(content > 400_000, "{r:#}");
    // The FAT partition holds exactly the tree (mtools reads it back).
    let inspect = run(rootbox(&user).args(["inspect", s(&img)]));
    inspect.assert_success();
    assert!(
        inspect
            .stdout
            .contains("/overlays/Überlay with a long name.dtbo"),
        "{inspect}"
    );
    // The block map: bmaptool's own copy checks every range's checksum.
    let text = fs::read_to_string(&bmap).unwrap();
    assert!(
        text.contains("<bmap version=\"2.0\">")
            && text.contains("<ChecksumType> sha256 </ChecksumType>"),
        "{text}"
    );
    if !have("bmaptool") {
        skipped(format_args!(
            "bmaptool missing (apt install bmap-tools): the .bmap was not tried"
        ));
        return;
    }
    let copy = dir.path().join("flashed.img");
    let out = run(cmd_as(&user, "bmaptool").args(["copy", "--bmap", s(&bmap), s(&img), s(&copy)]));
    out.assert_success();
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(&img).unwrap(),
        "bmaptool's copy differs"
    );
    // A corrupted block map is refused by bmaptool: the checksums are real.
    let bad = dir.path().join("bad.bmap");
    let mut bad_text = text.clone();
    let at = bad_text.find("chksum=\"").unwrap() + 8;
    bad_text.replace_range(at..at + 1, if &text[at..at + 1] == "0" { "1" } else { "0" });
    write_as(&user, &bad, bad_text);
    let copy2 = dir.path().join("flashed2.img");
    let out = run(cmd_as(&user, "bmaptool").args(["copy", "--bmap", s(&bad), s(&img), s(&copy2)]));
    assert!(
        !out.status.success(),
        "bmaptool accepted a wrong checksum:\n{out}"
    );
}

#[test]
fn reproducible_disks_from_two_copies_on_different_filesystems_are_identical() {
    let user = setup();
    let a = tempdir_for(&user);
    let b = tempdir_for(&user);
    inputs(&user, a.path());
    // The second copy on a tmpfs when root can mount one, written later.
    let on_tmpfs = is_root();
    if on_tmpfs {
        mount_tmpfs_for(&user, b.path(), "256m");
    }
    std::thread::sleep(Duration::from_millis(1100));
    inputs(&user, b.path());
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut imgs = Vec::new();
    for d in [a.path(), b.path()] {
        write_as(&user, &d.join("disk.json"), SPEC);
        let img = d.join("out.img");
        let out = run(rootbox(&user).envs(env).args([
            "disk",
            "--spec",
            s(&d.join("disk.json")),
            "--json",
            "-o",
            s(&img),
        ]));
        out.assert_success();
        assert!(json(&out)["reproducible"]["seed"].is_string());
        imgs.push(fs::read(&img).unwrap());
        std::thread::sleep(Duration::from_millis(1100));
    }
    if on_tmpfs {
        let _ = Command::new("umount").arg(b.path()).status();
    }
    assert_eq!(imgs[0].len(), imgs[1].len());
    let first = imgs[0].iter().zip(&imgs[1]).position(|(x, y)| x != y);
    assert!(first.is_none(), "the disks differ first at byte {first:?}");
    // Without the epoch, GUIDs are random: a different disk.
    let out = run(rootbox(&user).args([
        "disk",
        "--spec",
        s(&a.path().join("disk.json")),
        "-o",
        s(&a.path().join("random.img")),
    ]));
    out.assert_success();
    assert_ne!(fs::read(a.path().join("random.img")).unwrap(), imgs[0]);
}

#[test]
fn compressed_output_decompresses_to_the_disk() {
    let user = setup();
    let dir = tempdir_for(&user);
    inputs(&user, dir.path());
    let spec = r#"{"table": "mbr", "partitions": [
        {"name": "fw", "startSector": 16384, "size": "30M", "type": "b", "bootable": true,
         "content": {"fat": {"dir": "boot", "label": "FIRMWARE"}}},
        {"name": "data", "type": "linux", "content": {"raw": "uboot.itb"}}]}"#;
    write_as(&user, &dir.path().join("disk.json"), spec);
    let plain = dir.path().join("plain.img");
    let zst = dir.path().join("disk.img.zst");
    for (o, extra) in [(&plain, vec![]), (&zst, vec!["--compress-output", "zstd"])] {
        let out = run(rootbox(&user)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "disk",
                "--spec",
                s(&dir.path().join("disk.json")),
                "-o",
                s(o),
            ])
            .args(extra));
        out.assert_success();
    }
    let un = dir.path().join("un.img");
    let out = run(Command::new("zstd").args(["-d", "-q", "-o", s(&un), s(&zst)]));
    out.assert_success();
    assert_eq!(fs::read(&un).unwrap(), fs::read(&plain).unwrap());
    assert!(fs::metadata(&zst).unwrap().len() < 2_000_000);
}

/// Hostile specs, each: non-zero exit, an error naming what is wrong,
/// nothing at the output path, no scratch. All rows are reported.
#[test]
fn hostile_specs_fail_cleanly_naming_the_partition() {
    let user = setup();
    let dir = tempdir_for(&user);
    inputs(&user, dir.path());
    write_as(&user, &dir.path().join("big/file"), vec![1u8; 3 << 20]);
    write_as(&user, &dir.path().join("badname/a:b"), "x");
    write_as(&user, &dir.path().join("case/README"), "x");
    write_as(&user, &dir.path().join("case/readme"), "y");
    create_dirs_as(&user, &dir.path().join("adir"));
    // FAT's limits, each refused before anything is made.
    create_dirs_as(&user, &dir.path().join("huge"));
    let huge = fs::File::create(dir.path().join("huge/4GiB.img")).unwrap();
    huge.set_len(4 << 30).unwrap(); // sparse
    give_to(&user, &dir.path().join("huge/4GiB.img"));
    {
        use std::os::unix::ffi::OsStrExt;
        let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1");
        write_as(&user, &dir.path().join("latin1").join(latin1), "x");
    }
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    give_to(&user, &fifo);
    let many: Vec<String> = (0..129)
        .map(|i| format!(r#"{{"name":"p{i}","size":"1M","type":"linux"}}"#))
        .collect();
    let many = format!(r#"{{"table":"gpt","partitions":[{}]}}"#, many.join(","));
    let p = |parts: &str| format!(r#"{{"table":"gpt","partitions":[{parts}]}}"#);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("overlapping partitions", p(r#"{"name":"one","startSector":2048,"size":"2M","type":"linux"},{"name":"two","startSector":4096,"size":"1M","type":"linux"}"#), vec!["partition 2 (\"two\"", "partition 1 (\"one\""]),
        ("a blob over a partition", r#"{"table":"gpt","blobs":[{"file":"idbloader.img","sector":2100}],"partitions":[{"name":"root","startSector":2048,"size":"1M","type":"linux"}]}"#.into(), vec!["blob idbloader.img", "partition 1 (\"root\""]),
        ("a blob over the GPT", r#"{"table":"gpt","blobs":[{"file":"idbloader.img","sector":1}],"partitions":[{"name":"root","size":"1M","type":"linux"}]}"#.into(), vec!["blob idbloader.img", "the primary GPT"]),
        ("two blobs overlapping", r#"{"table":"gpt","blobs":[{"file":"idbloader.img","sector":64},{"file":"uboot.itb","sector":100}],"partitions":[{"name":"root","startSector":16384,"size":"1M","type":"linux"}]}"#.into(), vec!["blob uboot.itb", "blob idbloader.img"]),
        ("a blob larger than its slot", r#"{"table":"gpt","blobs":[{"file":"idbloader.img","sector":64,"maxSize":"16K"}],"partitions":[]}"#.into(), vec!["blob idbloader.img", "larger than its slot"]),
        ("a partition past the end", r#"{"table":"gpt","size":"8M","partitions":[{"name":"root","size":"8M","type":"linux"}]}"#.into(), vec!["partition 1 (\"root\")", "past the end of the disk"]),
        ("an alignment violation", p(r#"{"name":"root","startSector":1000,"type":"linux","size":"1M"}"#), vec!["partition 1 (\"root\")", "alignment"]),
        ("a FAT too small for its files", p(r#"{"name":"fw","size":"2M","type":"esp","content":{"fat":{"dir":"big"}}}"#), vec!["partition 1 (\"fw\")", "too small for its files"]),
        ("a name FAT cannot hold", p(r#"{"name":"fw","type":"esp","content":{"fat":{"dir":"badname"}}}"#), vec!["partition 1 (\"fw\")", "a:b"]),
        ("names equal but for case", p(r#"{"name":"fw","type":"esp","content":{"fat":{"dir":"case"}}}"#), vec!["partition 1 (\"fw\")", "differ only in case"]),
        ("a FAT file of 4 GiB", p(r#"{"name":"fw","type":"esp","content":{"fat":{"dir":"huge"}}}"#), vec!["partition 1 (\"fw\")", "huge/4GiB.img", "below 4 GiB"]),
        ("a fixed FAT size too small, before mkfs", p(r#"{"name":"fw","size":"2M","type":"esp","content":{"fat":{"dir":"big"}}}"#), vec!["partition 1 (\"fw\")", "/big", "with FAT's own structures"]),
        ("a non-UTF-8 name in FAT", p(r#"{"name":"fw","type":"esp","content":{"fat":{"dir":"latin1"}}}"#), vec!["partition 1 (\"fw\")", "latin1/caf\\xE9-latin1", "UTF-16"]),
        ("the btrfs shorthand naming ext4", p(r#"{"name":"root","type":"linux","content":{"btrfs":{"filesystem":"ext4","rootfs":"root"}}}"#), vec!["partition 1 (\"root\")", "content.btrfs.filesystem", "use \"build\""]),
        ("an unknown type", p(r#"{"name":"root","type":"linus"}"#), vec!["partition 1 (\"root\")", "unknown partition type \"linus\""]),
        ("129 GPT entries", many, vec!["at most 128"]),
        ("a raw file that is a directory", p(r#"{"name":"uboot","type":"linux","content":{"raw":"adir"}}"#), vec!["partition 1 (\"uboot\")", "is a directory"]),
        ("a raw file that is a FIFO", p(r#"{"name":"uboot","type":"linux","content":{"raw":"fifo"}}"#), vec!["partition 1 (\"uboot\")", "FIFO"]),
        ("a missing raw file", p(r#"{"name":"uboot","type":"linux","content":{"raw":"nothing.itb"}}"#), vec!["partition 1 (\"uboot\")", "nothing.itb"]),
        ("raw content larger than the partition", p(r#"{"name":"uboot","size":"64K","type":"linux","content":{"raw":"uboot.itb"}}"#), vec!["partition 1 (\"uboot\")", "more than its size"]),
        ("a GPT type byte on MBR's side", p(r#"{"name":"root","type":"0x83"}"#), vec!["partition 1 (\"root\")", "MBR type byte"]),
        ("five MBR partitions", r#"{"table":"mbr","partitions":[{"name":"a","type":"linux"},{"name":"b","type":"linux"},{"name":"c","type":"linux"},{"name":"d","type":"linux"},{"name":"e","type":"linux"}]}"#.into(), vec!["at most 4"]),
        ("an unknown field", r#"{"table":"gpt","partitons":[]}"#.into(), vec!["disk.json", "partitons"]),
    ];
    let mut failures = Vec::new();
    for (what, spec, needles) in &cases {
        let (out, img) = make_disk(&user, dir.path(), spec, &[]);
        let mut wrong = Vec::new();
        if out.status.success() || out.code() != Some(1) {
            wrong.push(format!("exit {:?}", out.code()));
        }
        for n in needles {
            if !out.stderr.contains(n) {
                wrong.push(format!("stderr lacks {n:?}"));
            }
        }
        if img.exists() {
            wrong.push("the output exists".into());
            let _ = fs::remove_file(&img);
        }
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rootbox") || n.contains("rootbox-tmp"))
            .collect();
        if !left.is_empty() {
            wrong.push(format!("scratch left: {left:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{what}: {}\n{}",
                wrong.join(", "),
                out.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile specs misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// SIGKILL while the disk is being assembled (a large raw partition being
/// spliced in): no output, no scratch (the disk is an unnamed file).
#[test]
fn sigkill_during_assembly_leaves_nothing() {
    let user = setup();
    let dir = tempdir_for(&user);
    let big = dir.path().join("big.raw");
    let out = run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", big.display()))
        .args(["bs=1M", "count=768", "status=none"]));
    out.assert_success();
    give_to(&user, &big);
    let spec = r#"{"table":"gpt","partitions":[{"name":"big","type":"linux","content":{"raw":"big.raw"}}]}"#;
    write_as(&user, &dir.path().join("disk.json"), spec);
    let img = dir.path().join("out.img");
    let running = start(rootbox(&user).args([
        "disk",
        "--spec",
        s(&dir.path().join("disk.json")),
        "-o",
        s(&img),
    ]));
    let pid = running.pid();
    // The unnamed disk file shows up among its descriptors as deleted.
    let assembling = wait_until(Duration::from_secs(30), || {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|t| {
                    let t = t.to_string_lossy().into_owned();
                    t.starts_with(s(dir.path())) && t.ends_with("(deleted)")
                })
            })
        })
    });
    assert!(assembling, "never saw the disk being assembled");
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let out = running.finish();
    assert_eq!(signal_of(&out.status), Some(9), "{out}");
    assert_nothing_left(dir.path(), &img);
}

/// A rootfs for the filesystem partitions (owned by the test user, so
/// root-owned in every image) and a directory for the vfat one.
fn tree_inputs(user: &User, dir: &Path) {
    write_as(user, &dir.join("root/etc/hostname"), "every-fs\n");
    write_as(user, &dir.join("root/srv/data/file"), vec![7u8; 20_000]);
    write_as(
        user,
        &dir.join("boot/EFI/BOOT/BOOTX64.EFI"),
        vec![0x5Au8; 9_000],
    );
    write_as(user, &dir.join("boot/loader.conf"), "timeout 3\n");
    write_as(user, &dir.join("blob.raw"), vec![0xA5u8; 70_000]);
}

/// A btrfs build's layout: the whole tree in `@`.
const AT_ROOT: &str = r#""subvolumes": [{"name": "@", "mountpoint": "/", "type": "default"}]"#;

/// One partition of each filesystem, built through `"build"` (and the
/// `btrfs` and `fat` shorthands), as JSON partitions.
fn partition_json(fs: &str, i: usize) -> String {
    let content = match fs {
        "vfat" => r#"{"fat": {"dir": "boot", "label": "BOOT"}}"#.to_string(),
        "btrfs-shorthand" => {
            format!(r#"{{"btrfs": {{"label": "r", "rootfs": "root", {AT_ROOT}}}}}"#)
        }
        "btrfs" => {
            format!(r#"{{"build": {{"filesystem": "btrfs", "rootfs": "root", {AT_ROOT}}}}}"#)
        }
        "raw" => r#"{"raw": "blob.raw"}"#.to_string(),
        fs => format!(r#"{{"build": {{"filesystem": "{fs}", "rootfs": "root"}}}}"#),
    };
    format!(r#"{{"name": "p{i}-{fs}", "type": "linux", "content": {content}}}"#)
}

/// Every filesystem partition of `report` extracted and read by rootbox
/// (`rootbox __fs-read`, `rootbox inspect`) and by the filesystem's own
/// tools; the files of the rootfs are root's in every image.
fn check_filesystems(user: &User, dir: &Path, image: &Path, report: &Value) {
    check_partitions(user, dir, image, report);
    for p in report["partitions"].as_array().unwrap() {
        let (off, len) = (
            p["offset_bytes"].as_u64().unwrap(),
            p["filesystem_bytes"].as_u64().unwrap(),
        );
        let fs = p["content"].as_str().unwrap().to_string();
        let part = dir.join(format!("fs-part{}", p["number"]));
        let _ = fs::remove_file(&part);
        extract(image, off, len, &part);
        give_to(user, &part);
        let own_tool = match fs.as_str() {
            "ext4" => {
                let out = run(Command::new("e2fsck").args(["-fn", s(&part)]));
                out.assert_success();
                let stat =
                    run(Command::new("debugfs").args(["-R", "stat /srv/data/file", s(&part)]));
                stat.assert_success();
                let words: Vec<&str> = stat.stdout.split_whitespace().collect();
                let after = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1]);
                assert_eq!(
                    (after("User:"), after("Group:")),
                    (Some("0"), Some("0")),
                    "{stat}"
                );
                true
            }
            "erofs" => {
                run(Command::new("fsck.erofs").arg(&part)).assert_success();
                true
            }
            "squashfs" => {
                let out = run(Command::new("unsquashfs").args(["-lln", s(&part)]));
                out.assert_success();
                let line = out
                    .stdout
                    .lines()
                    .find(|l| l.ends_with("/srv/data/file"))
                    .unwrap_or_else(|| panic!("no /srv/data/file in\n{out}"));
                assert!(line.split_whitespace().nth(1) == Some("0/0"), "{line}");
                true
            }
            "vfat" => {
                let out = run(Command::new("mdir")
                    .env("MTOOLSRC", "/dev/null")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .args(["-/", "-b", "-i", s(&part), "::/"]));
                out.assert_success();
                assert!(out.stdout.contains("::/EFI/BOOT/BOOTX64.EFI"), "{out}");
                false
            }
            _ => false,
        };
        if own_tool {
            // rootbox's own reader, on the partition alone: every inode root's.
            let out = run(rootbox(user).args(["__fs-read", "--filesystem", &fs, s(&part)]));
            out.assert_success();
            let inodes = json(&out);
            let file = inodes
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["path"] == "/srv/data/file")
                .unwrap_or_else(|| panic!("{fs}: no /srv/data/file in {inodes:#}"));
            assert_eq!((&file["uid"], &file["gid"]), (&0.into(), &0.into()), "{fs}");
        }
        let _ = fs::remove_file(&part);
    }
}

fn disk_with(
    user: &User,
    dir: &Path,
    table: &str,
    fss: &[&str],
    name: &str,
    extra: &[&str],
) -> (Value, PathBuf) {
    let parts: Vec<String> = fss
        .iter()
        .enumerate()
        .map(|(i, f)| partition_json(f, i + 1))
        .collect();
    let spec = format!(
        r#"{{"table": "{table}", "partitions": [{}]}}"#,
        parts.join(",")
    );
    write_as(user, &dir.join(format!("{name}.json")), &spec);
    let img = dir.join(format!("{name}.img"));
    let out = run(rootbox(user)
        .args([
            "disk",
            "--spec",
            s(&dir.join(format!("{name}.json"))),
            "--json",
            "-o",
            s(&img),
        ])
        .args(extra));
    out.assert_success();
    let r = json(&out);
    assert_eq!(r["verified"], true);
    assert_sfdisk_agrees(&img, &r);
    let kinds: Vec<&str> = r["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["content"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = fss
        .iter()
        .map(|f| f.strip_suffix("-shorthand").unwrap_or(f))
        .collect();
    assert_eq!(kinds, want, "{r:#}");
    (r, img)
}

/// `rootbox inspect DISK --json` names each partition's filesystem.
#[track_caller]
fn assert_inspect_kinds(user: &User, img: &Path, want: &[&str]) {
    let out = run(rootbox(user).args(["inspect", "--json", s(img)]));
    out.assert_success();
    let v = json(&out);
    let kinds: Vec<&str> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, want, "{v:#}");
    for p in v["partitions"].as_array().unwrap() {
        let kind = p["kind"].as_str().unwrap();
        let entries = match kind {
            "ext4" | "erofs" | "squashfs" => p["content"][kind]["entries"].as_u64(),
            "vfat" => p["content"]["fat"]["entries"].as_u64(),
            _ => continue,
        };
        assert!(entries.unwrap_or(0) >= 3, "{kind}: {p:#}");
    }
    let text = run(rootbox(user).args(["inspect", s(img)]));
    text.assert_success();
    for k in want {
        assert!(text.stdout.contains(&format!("holds {k}")), "{k}:\n{text}");
    }
}

#[test]
fn every_filesystem_in_one_gpt_disk_reads_back_and_inspect_lists_each() {
    let user = setup();
    let dir = tempdir_for(&user);
    tree_inputs(&user, dir.path());
    let fss = ["btrfs", "ext4", "erofs", "squashfs", "vfat", "raw"];
    let (r, img) = disk_with(&user, dir.path(), "gpt", &fss, "gpt", &[]);
    assert_sgdisk_clean(&img);
    check_filesystems(&user, dir.path(), &img, &r);
    assert_inspect_kinds(&user, &img, &fss);
}

#[test]
fn every_filesystem_in_mbr_disks_reads_back_with_its_own_tools() {
    let user = setup();
    let dir = tempdir_for(&user);
    tree_inputs(&user, dir.path());
    // An MBR holds four partitions: two disks.
    for (name, fss) in [
        ("mbr1", &["ext4", "erofs", "squashfs", "vfat"][..]),
        ("mbr2", &["btrfs-shorthand", "raw"][..]),
    ] {
        let (r, img) = disk_with(&user, dir.path(), "mbr", fss, name, &[]);
        check_filesystems(&user, dir.path(), &img, &r);
        let want: Vec<&str> = fss
            .iter()
            .map(|f| f.strip_suffix("-shorthand").unwrap_or(f))
            .collect();
        assert_inspect_kinds(&user, &img, &want);
    }
}

/// Under `--map subid`, a file the test user's subordinate ids own keeps
/// its owner in every filesystem of the disk (`start+999:start+99` is
/// 1000:100 in the namespace), and the user's own files are root's.
#[test]
fn a_subid_owned_file_keeps_its_owner_in_every_filesystem_partition_under_map_subid() {
    let user = setup();
    assert!(
        is_root(),
        "making a file owned by a subordinate id needs root"
    );
    let dir = tempdir_for(&user);
    tree_inputs(&user, dir.path());
    let ((sub_u, _), (sub_g, _)) = subid_ranges(&user).expect("the test user has subordinate ids");
    let profile = dir.path().join("root/home/alice/.profile");
    write_as(&user, &profile, "PS1=$\n");
    for p in [dir.path().join("root/home/alice"), profile] {
        std::os::unix::fs::lchown(&p, Some(sub_u + 999), Some(sub_g + 99)).unwrap();
    }
    let fss = ["btrfs", "ext4", "erofs", "squashfs"];
    let (r, img) = disk_with(&user, dir.path(), "gpt", &fss, "subid", &["--map", "subid"]);
    for p in r["partitions"].as_array().unwrap() {
        let fs = p["content"].as_str().unwrap();
        let part = dir.path().join(format!("subid-part{}", p["number"]));
        extract(
            &img,
            p["offset_bytes"].as_u64().unwrap(),
            p["filesystem_bytes"].as_u64().unwrap(),
            &part,
        );
        give_to(&user, &part);
        let owners = |path: &str| -> (u64, u64) {
            if fs == "btrfs" {
                let i = Inspected::of(&user, &part);
                let (u, g, _) = i.owner_mode(&format!("@{path}"));
                return (u.into(), g.into());
            }
            let out = run(rootbox(&user).args(["__fs-read", "--filesystem", fs, s(&part)]));
            out.assert_success();
            let v = json(&out);
            let e = v
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["path"] == path)
                .unwrap_or_else(|| panic!("{fs}: no {path} in {v:#}"))
                .clone();
            (e["uid"].as_u64().unwrap(), e["gid"].as_u64().unwrap())
        };
        assert_eq!(owners("/home/alice/.profile"), (1000, 100), "{fs}");
        assert_eq!(owners("/etc/hostname"), (0, 0), "{fs}");
        let _ = fs::remove_file(&part);
    }
}

/// SIGKILL while a partition is being built: nothing at the output path;
/// the scratch directory the build was using (which no process can remove
/// after SIGKILL) is removed by the next disk made in that directory.
#[test]
fn sigkill_during_a_partition_build_leaves_scratch_the_next_disk_sweeps() {
    let user = setup();
    let dir = tempdir_for(&user);
    tree_inputs(&user, dir.path());
    let big = dir.path().join("root/srv/big");
    let out = run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", big.display()))
        .args(["bs=1M", "count=400", "status=none"]));
    out.assert_success();
    give_to(&user, &big);
    let parts = [partition_json("btrfs", 1)];
    let spec = format!(r#"{{"table": "gpt", "partitions": [{}]}}"#, parts.join(","));
    write_as(&user, &dir.path().join("kill.json"), &spec);
    let img = dir.path().join("kill.img");
    let running = start(rootbox(&user).args([
        "disk",
        "--spec",
        s(&dir.path().join("kill.json")),
        "-o",
        s(&img),
    ]));
    let scratch = || -> Vec<String> {
        fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rootbox-disk-"))
            .collect()
    };
    let building = wait_until(Duration::from_secs(60), || !scratch().is_empty());
    assert!(building, "never saw the partition being built");
    std::thread::sleep(Duration::from_millis(300));
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let out = running.finish();
    assert_eq!(signal_of(&out.status), Some(9), "{out}");
    assert!(!img.exists(), "{} exists", img.display());
    assert!(
        !scratch().is_empty(),
        "SIGKILL left no scratch: the sweep is not tried"
    );
    // The killed run's processes are gone once their sandbox notices.
    std::thread::sleep(Duration::from_secs(2));
    let (r, next) = disk_with(&user, dir.path(), "gpt", &["raw"], "next", &[]);
    assert_eq!(r["verified"], true);
    assert!(next.exists());
    assert_nothing_left(dir.path(), &img);
}

// ---- a vfat build is the fat content -------------------------------------

/// Every file and directory below `root`, relative, with the file's bytes.
fn tree_bytes(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fn walk(root: &Path, rel: &Path, into: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let rel = rel.join(n);
            let p = root.join(&rel);
            if p.is_dir() {
                into.push((rel.clone(), None));
                walk(root, &rel, into);
            } else {
                into.push((rel, Some(fs::read(&p).unwrap())));
            }
        }
    }
    let mut t = Vec::new();
    walk(root, Path::new(""), &mut t);
    t
}

#[test]
fn a_vfat_build_partition_reads_back_like_the_fat_one() {
    let user = setup();
    let dir = tempdir_for(&user);
    let d = dir.path();
    tree_inputs(&user, d);
    write_as(
        &user,
        &d.join("boot/loader/entries/nixos génération 1.conf"),
        "title NixOS\n",
    );
    // The same directory as `fat`, as a vfat `build` of an auto size, and
    // as a vfat `build` filling the rest of a fixed-size disk (made once
    // placed, as `fat` is).
    let spec = r#"{"table": "gpt", "size": "64M", "partitions": [
      {"name": "fat", "type": "esp", "content": {"fat": {"dir": "boot", "label": "BOOT"}}},
      {"name": "build", "type": "esp", "content": {"build": {"filesystem": "vfat", "rootfs": "boot", "label": "BOOT"}}},
      {"name": "fill", "type": "linux", "size": "fill", "content": {"build": {"filesystem": "vfat", "rootfs": "boot"}}}
    ]}"#;
    for (table, env) in [("gpt", None), ("mbr", Some("1700000000"))] {
        let spec = spec.replace("\"gpt\"", &format!("\"{table}\""));
        let spec = if table == "mbr" {
            spec.replace("\"esp\"", "\"0xef\"")
                .replace("\"linux\"", "\"0x83\"")
        } else {
            spec
        };
        write_as(&user, &d.join("vfat.json"), &spec);
        let img = d.join(format!("vfat-{table}.img"));
        let mut cmd = rootbox(&user);
        cmd.args([
            "disk",
            "--spec",
            s(&d.join("vfat.json")),
            "--json",
            "-o",
            s(&img),
        ]);
        if let Some(e) = env {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        let out = run(&mut cmd);
        out.assert_success();
        let r = json(&out);
        assert_eq!(r["verified"], true, "{r:#}");
        assert_sfdisk_agrees(&img, &r);
        let parts = r["partitions"].as_array().unwrap();
        for p in parts {
            assert_eq!(p["content"], "vfat", "{p:#}");
        }
        // The fill partition took the rest of the disk.
        let last = &parts[2];
        assert!(
            last["filesystem_bytes"].as_u64().unwrap() > 50 << 20,
            "{last:#}"
        );
        // Read back by fsck.vfat (check_partitions) and mdir
        // (check_filesystems), then copied out with mcopy: the same tree
        // as the directory, byte for byte, in every partition.
        check_filesystems(&user, d, &img, &r);
        let want = tree_bytes(&d.join("boot"));
        for p in parts {
            let (off, len) = (
                p["offset_bytes"].as_u64().unwrap(),
                p["filesystem_bytes"].as_u64().unwrap(),
            );
            let part = d.join("vfat-part");
            let back = d.join("vfat-back");
            let _ = fs::remove_file(&part);
            let _ = fs::remove_dir_all(&back);
            extract(&img, off, len, &part);
            fs::create_dir(&back).unwrap();
            run(Command::new("mcopy")
                .env("MTOOLSRC", "/dev/null")
                .env("MTOOLS_SKIP_CHECK", "1")
                .env("LC_ALL", "C.UTF-8")
                .args(["-s", "-n", "-i", s(&part), "::/*"])
                .arg(&back))
            .assert_success();
            assert!(tree_bytes(&back) == want, "{}: another tree", p["name"]);
        }
        // rootbox's own FAT reader lists all three alike.
        assert_inspect_kinds(&user, &img, &["vfat", "vfat", "vfat"]);
        let out = run(rootbox(&user).args(["inspect", "--json", s(&img)]));
        let v = json(&out);
        let files = |i: usize| v["partitions"][i]["content"]["fat"]["files"].clone();
        assert_eq!(files(0), files(1), "{v:#}");
        assert_eq!(files(0), files(2), "{v:#}");
        assert_eq!(v["partitions"][1]["content"]["fat"]["label"], "BOOT");
        let _ = fs::remove_file(&img);
    }
}

#[test]
fn a_vfat_build_refuses_what_fat_cannot_take_naming_the_partition_and_field() {
    let user = setup();
    let dir = tempdir_for(&user);
    let d = dir.path();
    tree_inputs(&user, d);
    write_as(&user, &d.join("bad/a:b"), "x");
    let p = |content: &str| {
        format!(
            r#"{{"table":"gpt","partitions":[{{"name":"esp","type":"esp","content":{content}}}]}}"#
        )
    };
    let cases = [
        (
            p(r#"{"build":{"filesystem":"vfat","rootfs":"boot","closure":"root"}}"#),
            vec![
                "partition 1 (\"esp\")",
                "\"closure\" cannot be used with vfat",
            ],
        ),
        (
            p(r#"{"build":{"filesystem":"vfat","rootfs":"boot","owners":"o.txt"}}"#),
            vec![
                "partition 1 (\"esp\")",
                "\"owners\" cannot be used with vfat",
            ],
        ),
        (
            p(r#"{"build":{"filesystem":"vfat","rootfs":"boot","label":"MUCH TOO LONG"}}"#),
            vec!["partition 1 (\"esp\")", "1 to 11 characters"],
        ),
        (
            p(r#"{"build":{"filesystem":"vfat"}}"#),
            vec![
                "partition 1 (\"esp\")",
                "\"rootfs\" cannot be used with vfat",
            ],
        ),
        (
            p(r#"{"btrfs":{"filesystem":"vfat","rootfs":"boot"}}"#),
            vec!["content.btrfs.filesystem is \"vfat\"", "use \"build\""],
        ),
        (
            p(r#"{"build":{"filesystem":"vfat","rootfs":"bad"}}"#),
            vec!["partition 1 (\"esp\")", "bad/a:b", "':'"],
        ),
    ];
    let mut failures = Vec::new();
    for (spec, needles) in &cases {
        let (out, img) = make_disk(&user, d, spec, &[]);
        let missing: Vec<_> = needles
            .iter()
            .filter(|n| !out.stderr.contains(**n))
            .collect();
        if out.status.success() || !missing.is_empty() {
            failures.push(format!("{spec}: missing {missing:?}\n{out}"));
        }
        assert_nothing_left(d, &img);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---- the largest build becomes the disk ------------------------------------

/// On ext4 or XFS the largest build's own file becomes the disk
/// (`fallocate` inserts room before it: its data is not copied); on a
/// tmpfs, which cannot, it is copied in. Made reproducibly from the same
/// inputs, the two disks are the same bytes, and the adopted one's
/// assembly wrote less by at least that filesystem's data. The adopted
/// partition reads back with e2fsck and rootbox's reader; nothing is left
/// beside the output.
#[test]
fn the_largest_build_becomes_the_disk_where_room_can_be_inserted_and_matches_a_copy_byte_for_byte()
{
    use nix::sys::statfs::{statfs, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
    let user = setup();
    let a = tempdir_for(&user);
    let b = tempdir_for(&user);
    let kind = statfs(a.path()).unwrap().filesystem_type();
    if kind != EXT4_SUPER_MAGIC && kind != XFS_SUPER_MAGIC {
        skipped(format_args!(
            "{} is on neither ext4 nor XFS: no file there can become the disk",
            a.path().display()
        ));
        return;
    }
    if !is_root() {
        skipped(format_args!(
            "mounting the tmpfs for the copied disk needs root"
        ));
        return;
    }
    mount_tmpfs_for(&user, b.path(), "256m");
    // 3 MB of data that neither mkfs can leave out as holes.
    let big: Vec<u8> = (0..3_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    let spec = format!(
        r#"{{"table": "gpt", "partitions": [{}, {},
            {{"name": "big", "type": "linux", "content": {{"build": {{"filesystem": "ext4", "size": "160M", "rootfs": "big"}}}}}},
            {}]}}"#,
        partition_json("vfat", 1),
        partition_json("btrfs", 2),
        partition_json("raw", 4)
    );
    let mut reports = Vec::new();
    for d in [a.path(), b.path()] {
        tree_inputs(&user, d);
        write_as(&user, &d.join("big/srv/data/file"), vec![7u8; 20_000]);
        write_as(&user, &d.join("big/srv/big"), &big);
        write_as(&user, &d.join("disk.json"), &spec);
        let out = run(rootbox(&user)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("RUST_LOG", "rootbox=debug")
            .args(["disk", "--spec", s(&d.join("disk.json")), "--json"])
            .args(["-o", s(&d.join("out.img"))]));
        out.assert_success();
        reports.push((json(&out), out.stderr.clone()));
    }
    let ((ra, _), (rb, log_b)) = (&reports[0], &reports[1]);
    assert_eq!(ra["adopted_partition"], 3, "{ra:#}");
    assert_eq!(rb["adopted_partition"], Value::Null, "{rb:#}");
    assert!(
        log_b.contains("cannot insert room before the image"),
        "the fall-back to a copy is not said at debug level:\n{log_b}"
    );
    let (wa, wb) = (
        ra["bytes_written"].as_u64().unwrap(),
        rb["bytes_written"].as_u64().unwrap(),
    );
    assert!(wb >= wa + 3_000_000, "written: adopted {wa}, copied {wb}");
    let img = a.path().join("out.img");
    let (da, db) = (
        fs::read(&img).unwrap(),
        fs::read(b.path().join("out.img")).unwrap(),
    );
    let _ = Command::new("umount").arg(b.path()).status();
    assert_eq!(da.len(), db.len());
    let first = da.iter().zip(&db).position(|(x, y)| x != y);
    assert!(first.is_none(), "the disks differ first at byte {first:?}");
    assert_sgdisk_clean(&img);
    check_filesystems(&user, a.path(), &img, ra);
    let left: Vec<String> = fs::read_dir(a.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rootbox") || n.contains("rootbox-tmp"))
        .collect();
    assert!(left.is_empty(), "scratch left: {left:?}");
}

/// SIGKILL while a large raw partition is spliced into a disk whose root
/// build's own file became the disk: nothing at the output path; the
/// scratch directory holding that file is removed by the next disk made
/// in that directory.
#[test]
fn sigkill_while_assembling_around_an_adopted_build_leaves_scratch_the_next_disk_sweeps() {
    use nix::sys::statfs::{statfs, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
    let user = setup();
    let dir = tempdir_for(&user);
    let kind = statfs(dir.path()).unwrap().filesystem_type();
    if kind != EXT4_SUPER_MAGIC && kind != XFS_SUPER_MAGIC {
        skipped(format_args!(
            "{} is on neither ext4 nor XFS: no build's file can become the disk",
            dir.path().display()
        ));
        return;
    }
    tree_inputs(&user, dir.path());
    let big = dir.path().join("big.raw");
    let out = run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", big.display()))
        .args(["bs=1M", "count=600", "status=none"]));
    out.assert_success();
    give_to(&user, &big);
    let spec = format!(
        r#"{{"table": "gpt", "partitions": [{}, {{"name": "big", "type": "linux", "content": {{"raw": "big.raw"}}}}]}}"#,
        partition_json("btrfs", 1)
    );
    write_as(&user, &dir.path().join("kill.json"), &spec);
    let img = dir.path().join("kill.img");
    let running = start(rootbox(&user).args([
        "disk",
        "--spec",
        s(&dir.path().join("kill.json")),
        "-o",
        s(&img),
    ]));
    // The adopted build, grown to the disk's size, in the scratch directory.
    let grown = || {
        fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".rootbox-disk-")
                && fs::read_dir(e.path()).is_ok_and(|files| {
                    files
                        .flatten()
                        .any(|f| f.metadata().is_ok_and(|m| m.len() > 600 << 20))
                })
        })
    };
    let assembling = wait_until(Duration::from_secs(120), grown);
    assert!(assembling, "never saw the build's file grown into the disk");
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let out = running.finish();
    assert_eq!(signal_of(&out.status), Some(9), "{out}");
    assert!(!img.exists(), "{} exists", img.display());
    assert!(grown(), "SIGKILL left no scratch: the sweep is not tried");
    // The killed run's processes are gone once their sandbox notices.
    std::thread::sleep(Duration::from_secs(2));
    let (r, next) = disk_with(&user, dir.path(), "gpt", &["raw"], "next", &[]);
    assert_eq!(r["verified"], true);
    assert!(next.exists());
    assert_nothing_left(dir.path(), &img);
}
