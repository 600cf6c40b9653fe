//! Integration tests of `rootbox disk --definitions` (systemd-repart's
//! repart.d files), as the unprivileged test user: the translation
//! (`--print-spec`) of the definitions in `tests/fixtures/repart/`; every
//! refusal naming file:line:key with nothing written; a disk from the
//! definitions read back with `sfdisk --json` and `rootbox inspect`, alice's
//! home kept 1000:100 under `--map subid`; the dm-verity pair checked with
//! `veritysetup verify` (and failing after one flipped byte); two
//! reproducible disks identical; an MBR disk with a blob at sector 64 and
//! owners from `X-Rootbox-Owners=`. The side-by-side with systemd-repart
//! 262 needs the sid tree and root, so it is `#[ignore]`d here and run by
//! scripts/test's `sid-repart` suite (`ROOTBOX_SID_TREE`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/repart")
        .join(name)
}

/// The fixture definitions `name` copied where the test user reads them.
fn definitions(user: &User, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    for e in fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        write_as(user, &to.join(e.file_name()), fs::read(e.path()).unwrap());
    }
    to
}

/// The tree the definitions copy from: an ESP in /boot, /usr, /etc, and
/// alice's home.
fn tree(user: &User, dir: &Path) -> PathBuf {
    let src = dir.join("src");
    write_as(
        user,
        &src.join("boot/EFI/BOOT/BOOTX64.EFI"),
        vec![0x5Au8; 9_000],
    );
    write_as(user, &src.join("etc/hostname"), "repart\n");
    write_as(user, &src.join("usr/lib/os-release"), "ID=rootbox\n");
    write_as(user, &src.join("usr/bin/tool"), vec![0x7Fu8; 50_000]);
    write_as(user, &src.join("home/alice/.profile"), "PS1=$\n");
    src
}

/// What a failed run may not leave beside its output.
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

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn print_spec_shows_the_disk_spec_the_definitions_give() {
    let user = setup();
    let dir = tempdir_for(&user);
    let defs = definitions(&user, dir.path(), "full");
    let src = tree(&user, dir.path());
    let out = run(rootbox(&user).args([
        "disk",
        "--definitions",
        s(&defs),
        "--copy-source",
        s(&src),
        "--architecture",
        "arm64",
        "--print-spec",
    ]));
    out.assert_success();
    let v = json(&out);
    let parts = v["partitions"].as_array().unwrap();
    let rows: Vec<(String, String, String, String)> = parts
        .iter()
        .map(|p| {
            let content = match &p["content"] {
                Value::Null => "none".to_string(),
                c if c.get("build").is_some() => {
                    c["build"]["filesystem"].as_str().unwrap().to_string()
                }
                c => c.as_object().unwrap().keys().next().unwrap().clone(),
            };
            (
                p["name"].as_str().unwrap().to_string(),
                p["type"].as_str().unwrap().to_string(),
                content,
                p["attributes"].to_string(),
            )
        })
        .collect();
    let want = [
        ("ESP", "esp", "vfat", "null"),
        ("root", "root-arm64", "btrfs", "[59]"),
        (
            "usr",
            "B0E01050-EE5F-4390-949A-9101B17104E9",
            "erofs",
            "[60]",
        ),
        (
            "usr-verity",
            "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E",
            "verityHash",
            "[60]",
        ),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(rows, want, "{v:#}");
    assert_eq!(v["table"], "gpt");
    assert_eq!(parts[0]["size"], "32M", "SizeMinBytes=SizeMaxBytes=: {v:#}");
    assert_eq!(
        parts[1]["minSize"], "10M",
        "repart's default minimum: {v:#}"
    );
    assert!(parts[2].get("minSize").is_none(), "Minimize=best: {v:#}");
    let root = &parts[1]["content"]["build"];
    assert_eq!(root["rootfs"], s(&src));
    assert_eq!(
        root["subvolumes"],
        serde_json::json!([
            {"name": "@", "mountpoint": "/", "type": "default"},
            {"name": "@home", "mountpoint": "/home", "type": "rw"}
        ])
    );
    assert_eq!(parts[0]["content"]["build"]["rootfs"], s(&src.join("boot")));
    assert_eq!(parts[3]["content"]["verityHash"]["data"], "usr");
    // The MBR set, with the disk-level flags.
    let mbr = definitions(&user, dir.path(), "mbr");
    write_as(&user, &dir.path().join("idbloader.img"), vec![0xA5u8; 4096]);
    let out = run(rootbox(&user).args([
        "disk",
        "--definitions",
        s(&mbr),
        "--copy-source",
        s(&src),
        "--table",
        "mbr",
        "--blob",
        &format!("{}@64", dir.path().join("idbloader.img").display()),
        "--print-spec",
    ]));
    out.assert_success();
    let v = json(&out);
    assert_eq!(v["table"], "mbr");
    assert_eq!(v["blobs"][0]["sector"], 64, "{v:#}");
    assert_eq!(v["partitions"][0]["type"], "esp");
    assert_eq!(v["partitions"][1]["type"], "root-arm64");
    assert_eq!(v["partitions"][1]["startSector"], 32768);
    assert!(
        v["partitions"][1].get("attributes").is_none(),
        "no GPT flags on MBR: {v:#}"
    );
    // rootbox's extension keys.
    let ext = dir.path().join("ext");
    write_as(
        &user,
        &ext.join("10-root.conf"),
        "[Partition]\nType=root\nFormat=btrfs\nCopyFiles=/:/\nX-Rootbox-StartSector=64\n\
         X-Rootbox-Owners=owners.txt\nX-Rootbox-Closure=closure-info\n\
         X-Rootbox-Registration=/nix/nix-path-registration\n",
    );
    let out = run(rootbox(&user).args(["disk", "--definitions", s(&ext), "--print-spec"]));
    out.assert_success();
    let v = json(&out);
    let p = &v["partitions"][0];
    assert_eq!(p["startSector"], 64, "{v:#}");
    let b = &p["content"]["build"];
    assert_eq!(b["owners"], s(&ext.join("owners.txt")), "{v:#}");
    assert_eq!(b["closure"], s(&ext.join("closure-info")), "{v:#}");
    assert_eq!(b["registration"], "/nix/nix-path-registration", "{v:#}");
    assert_eq!(b["rootfs"], "/", "no --copy-source: /, as in repart");
    assert_eq!(
        b["subvolumes"],
        serde_json::json!([{"name": "@", "mountpoint": "/", "type": "default"}]),
        "a btrfs without Subvolumes=: the tree in @, the default subvolume"
    );
}

/// One hostile definition set: its files, and what the error must name.
struct Hostile {
    what: &'static str,
    files: Vec<(&'static str, &'static str)>,
    at: &'static str,
    needle: &'static str,
}

fn hostile_rows() -> Vec<Hostile> {
    let one = |what, text: &'static str, at, needle| Hostile {
        what,
        files: vec![("10-a.conf", text)],
        at,
        needle,
    };
    vec![
        one("Encrypt=", "[Partition]\nType=linux-generic\nEncrypt=tpm2\n", "10-a.conf:3: Encrypt=", "LUKS"),
        one("an unknown key", "[Partition]\nType=linux-generic\nFoo=1\n", "10-a.conf:3: Foo=", "unknown key"),
        one("an unknown X-Rootbox- key", "[Partition]\nX-Rootbox-Bar=1\n", "10-a.conf:2: X-Rootbox-Bar=", "unknown key"),
        one("an unknown Type=", "[Partition]\nType=root-mips\n", "10-a.conf:2: Type=", "not a partition type"),
        one("Format=xfs", "[Partition]\nType=linux-generic\nFormat=xfs\n", "10-a.conf:3: Format=", "rootbox builds vfat"),
        one("Format=swap", "[Partition]\nType=swap\nFormat=swap\n", "10-a.conf:3: Format=", "mkswap"),
        one("a specifier", "[Partition]\nLabel=root-%a\n", "10-a.conf:2: Label=", "specifiers"),
        one("another section", "[Match]\nType=esp\n", "10-a.conf:1: [Match]", "[Partition]"),
        one("MakeDirectories=", "[Partition]\nFormat=ext4\nMakeDirectories=/usr\n", "10-a.conf:3: MakeDirectories=", "CopyFiles="),
        one("two CopyFiles= on ext4", "[Partition]\nFormat=ext4\nCopyFiles=/etc:/\nCopyFiles=/usr:/usr\n", "10-a.conf:4: CopyFiles=", "one tree"),
        one("Verity=signature", "[Partition]\nType=usr-verity-sig\n", "10-a.conf:2: Type=", "not a partition type"),
        one("a subvolume on ext4", "[Partition]\nFormat=ext4\nCopyFiles=/:/@\nSubvolumes=/@\n", "10-a.conf:4: Subvolumes=", "only btrfs"),
        one("a nested tree not excluded", "[Partition]\nFormat=btrfs\nCopyFiles=/:/@\nCopyFiles=/home:/@home\nSubvolumes=/@ /@home\n", "10-a.conf:3: CopyFiles=", "ExcludeFiles=/home/"),
        one("Verity=data without its hash", "[Partition]\nType=usr\nFormat=erofs\nCopyFiles=/usr:/\nVerity=data\nVerityMatchKey=usr\n", "10-a.conf:5: Verity=", "without a Verity=hash"),
        one("Verity= without a key", "[Partition]\nType=usr\nFormat=erofs\nVerity=data\n", "10-a.conf:4: Verity=", "VerityMatchKey="),
        one("Verity=data on ext4", "[Partition]\nType=usr\nFormat=ext4\nCopyFiles=/usr:/\nVerity=data\nVerityMatchKey=usr\n", "10-a.conf:3: Format=", "read-only filesystem"),
        one("a vfat label FAT cannot hold", "[Partition]\nType=esp\nLabel=a-label-too-long\nFormat=vfat\nCopyFiles=/boot:/\n", "10-a.conf:3: Label=", "11"),
        one("SizeMaxBytes= below SizeMinBytes=", "[Partition]\nSizeMinBytes=20M\nSizeMaxBytes=10M\n", "10-a.conf:3: SizeMaxBytes=", "below SizeMinBytes="),
        one("a relative X-Rootbox-Registration=", "[Partition]\nFormat=btrfs\nX-Rootbox-Registration=nix-path-registration\n", "10-a.conf:3: X-Rootbox-Registration=", "absolute path in the image"),
        one("a SplitName= specifier other than %t", "[Partition]\nSplitName=%T\n", "10-a.conf:2: SplitName=", "specifiers"),
        one("GPT flags on MBR", "[Partition]\nType=linux-generic\nReadOnly=yes\n", "10-a.conf:3: ReadOnly=", "MBR"),
        Hostile {
            what: "two Verity=data with one key",
            files: vec![
                ("10-a.conf", "[Partition]\nType=usr\nFormat=erofs\nCopyFiles=/usr:/\nVerity=data\nVerityMatchKey=usr\n"),
                ("20-b.conf", "[Partition]\nType=usr\nLabel=usr2\nFormat=erofs\nCopyFiles=/usr:/\nVerity=data\nVerityMatchKey=usr\n"),
            ],
            at: "20-b.conf:6: Verity=",
            needle: "already has a Verity=data",
        },
        Hostile {
            what: "two partitions with one label",
            files: vec![("10-a.conf", "[Partition]\nType=esp\n"), ("20-b.conf", "[Partition]\nType=esp\n")],
            at: "20-b.conf:2: Type=",
            needle: "unique Label=",
        },
    ]
}

#[test]
fn every_refusal_names_file_line_and_key_and_writes_nothing() {
    let user = setup();
    let dir = tempdir_for(&user);
    let src = tree(&user, dir.path());
    let mut bad = Vec::new();
    for (i, h) in hostile_rows().iter().enumerate() {
        let defs = dir.path().join(format!("defs{i}"));
        for (name, text) in &h.files {
            write_as(&user, &defs.join(name), text);
        }
        let img = dir.path().join(format!("out{i}.img"));
        let mut cmd = rootbox(&user);
        cmd.args([
            "disk",
            "--definitions",
            s(&defs),
            "--copy-source",
            s(&src),
            "-o",
            s(&img),
        ]);
        if h.what == "GPT flags on MBR" {
            cmd.args(["--table", "mbr"]);
        }
        let out = run(&mut cmd);
        let at = format!("{}/{}", defs.display(), h.at);
        if out.code() != Some(1) || !out.stderr.contains(&at) || !out.stderr.contains(h.needle) {
            bad.push(format!(
                "{}: want {at:?} and {:?}:\n{out}",
                h.what, h.needle
            ));
        }
        if img.exists() {
            bad.push(format!("{}: {} was written", h.what, img.display()));
        }
    }
    assert_nothing_left(dir.path(), &dir.path().join("out0.img"));
    assert!(
        bad.is_empty(),
        "{} of the refusals are wrong:\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}

/// Builds the `full` definitions into `full.img` with alice's home owned
/// by the test user's subordinate ids (1000:100 in the namespace),
/// reproducibly (SOURCE_DATE_EPOCH set, as Nix sets it).
fn full_disk(user: &User, dir: &Path) -> (Value, PathBuf) {
    let defs = definitions(user, dir, "full");
    let src = tree(user, dir);
    let ((sub_u, _), (sub_g, _)) = subid_ranges(user).expect("the test user has subordinate ids");
    for p in [src.join("home/alice"), src.join("home/alice/.profile")] {
        std::os::unix::fs::lchown(&p, Some(sub_u + 999), Some(sub_g + 99)).unwrap();
    }
    let img = dir.join("full.img");
    let out = run(rootbox(user).env("SOURCE_DATE_EPOCH", "1700000000").args([
        "disk",
        "--definitions",
        s(&defs),
        "--copy-source",
        s(&src),
        "--map",
        "subid",
        "--reproducible",
        "--json",
        "-o",
        s(&img),
    ]));
    out.assert_success();
    (json(&out), img)
}

fn extract(image: &Path, part: &Value, to: &Path) {
    let out = run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=512", "status=none"])
        .arg(format!("skip={}", part["start_sector"]))
        .arg(format!("count={}", part["sectors"])));
    out.assert_success();
}

#[test]
fn a_disk_from_definitions_reads_back_keeps_alice_and_its_verity_pair_verifies() {
    let user = setup();
    assert!(
        is_root(),
        "making a file owned by a subordinate id needs root"
    );
    let dir = tempdir_for(&user);
    let (r, img) = full_disk(&user, dir.path());
    // The table, as sfdisk reads it.
    let t = run(Command::new("sfdisk").arg("--json").arg(&img));
    t.assert_success();
    let t: Value = serde_json::from_str(&t.stdout).unwrap();
    let parts = t["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    let seen: Vec<(String, String, String)> = parts
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["type"].as_str().unwrap().to_string(),
                p["attrs"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let host_root = match std::env::consts::ARCH {
        "aarch64" => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        _ => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    };
    let host_usr = match std::env::consts::ARCH {
        "aarch64" => (
            "B0E01050-EE5F-4390-949A-9101B17104E9",
            "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E",
        ),
        _ => (
            "8484680C-9521-48C6-9C11-B0720656F69E",
            "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
        ),
    };
    let want = [
        ("ESP", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", ""),
        ("root", host_root, "GUID:59"),
        ("usr", host_usr.0, "GUID:60"),
        ("usr-verity", host_usr.1, "GUID:60"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, want, "{t:#}");
    // The verity pair: GUIDs from the root hash, as repart makes them.
    let rh = r["partitions"][2]["roothash"]
        .as_str()
        .expect("a root hash")
        .to_string();
    assert_eq!(r["partitions"][3]["roothash"].as_str(), Some(rh.as_str()));
    let guid = |p: &Value| p["uuid"].as_str().unwrap().replace('-', "").to_lowercase();
    assert_eq!(guid(&parts[2]), rh[..32], "data GUID = first 128 bits");
    assert_eq!(guid(&parts[3]), rh[32..], "hash GUID = last 128 bits");
    // rootbox inspect lists every partition.
    let ins = run(rootbox(&user).args(["inspect", "--json", s(&img)]));
    ins.assert_success();
    let kinds: Vec<String> = json(&ins)["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["vfat", "btrfs", "erofs", "raw"], "{ins}");
    // Alice's home keeps her owner; the rest is root's.
    let root = dir.path().join("root.part");
    extract(&img, &r["partitions"][1], &root);
    give_to(&user, &root);
    let i = Inspected::of(&user, &root);
    assert_eq!(i.owner_mode("@home/alice/.profile").0, 1000);
    assert_eq!(i.owner_mode("@home/alice/.profile").1, 100);
    assert_eq!(i.owner_mode("@/etc/hostname").0, 0);
    assert_eq!(i.owner_mode("@/usr/lib/os-release").0, 0);
    assert!(i.subvolumes().contains("@home"), "{:?}", i.subvolumes());
    // /home is @home's mount point: empty in @, as ExcludeFiles=/home/ makes it.
    assert!(i.entries.contains_key("@/home"));
    assert!(
        !i.entries.contains_key("@/home/alice"),
        "alice's home is in @ too"
    );
    verity_verifies(dir.path(), &img, &r, &rh);
}

/// `--split`: each partition's bytes beside the disk as
/// `IMAGE.NAME.raw`, NAME its `SplitName=` (default the type's name, as
/// systemd-repart 262 names them), none for `SplitName=-`.
#[test]
fn split_writes_each_partition_beside_the_disk_as_repart_names_it() {
    let user = setup();
    let dir = tempdir_for(&user);
    let defs = definitions(&user, dir.path(), "full");
    let esp = defs.join("00-esp.conf");
    let text = fs::read_to_string(&esp).unwrap() + "SplitName=-\n";
    write_as(&user, &esp, text);
    let src = tree(&user, dir.path());
    let img = dir.path().join("img.raw");
    let out = run(rootbox(&user).args([
        "disk",
        "--definitions",
        s(&defs),
        "--copy-source",
        s(&src),
        "--architecture",
        "x86-64",
        "--split",
        "--json",
        "-o",
        s(&img),
    ]));
    out.assert_success();
    let r = json(&out);
    let disk = fs::read(&img).unwrap();
    let names = [
        None,
        Some("root-x86-64"),
        Some("usr-x86-64"),
        Some("usr-x86-64-verity"),
    ];
    for (p, name) in r["partitions"].as_array().unwrap().iter().zip(names) {
        let Some(name) = name else {
            assert!(p.get("split_path").is_none(), "{p:#}");
            assert!(!dir.path().join("img.esp.raw").exists());
            continue;
        };
        let path = dir.path().join(format!("img.{name}.raw"));
        assert_eq!(p["split_path"].as_str(), Some(s(&path)), "{p:#}");
        let (off, len) = (
            p["offset_bytes"].as_u64().unwrap() as usize,
            p["size_bytes"].as_u64().unwrap() as usize,
        );
        assert!(
            fs::read(&path).unwrap() == disk[off..off + len],
            "{name}: not the partition's bytes"
        );
    }
}

/// Two reproducible disks from two copies of the definitions and the tree:
/// the same bytes, so the same salt, hash tree and root hash.
#[test]
fn a_reproducible_disk_from_definitions_is_the_same_twice_root_hash_included() {
    let user = setup();
    assert!(
        is_root(),
        "making a file owned by a subordinate id needs root"
    );
    let (a, b) = (tempdir_for(&user), tempdir_for(&user));
    let (ra, ia) = full_disk(&user, a.path());
    let (rb, ib) = full_disk(&user, b.path());
    let hash = |r: &Value| r["partitions"][2]["roothash"].as_str().unwrap().to_string();
    assert_eq!(hash(&ra), hash(&rb));
    assert!(
        fs::read(&ia).unwrap() == fs::read(&ib).unwrap(),
        "the two disks differ"
    );
}

/// `veritysetup verify` of the disk's data and hash partitions passes
/// with the reported root hash, and fails once a byte of the data flips.
fn verity_verifies(dir: &Path, img: &Path, r: &Value, rh: &str) {
    if !have("veritysetup") {
        return skipped(format_args!(
            "veritysetup (cryptsetup-bin) is not installed"
        ));
    }
    let (data, hash) = (dir.join("usr.part"), dir.join("usr-verity.part"));
    extract(img, &r["partitions"][2], &data);
    extract(img, &r["partitions"][3], &hash);
    let verify = || {
        run(Command::new("veritysetup")
            .arg("verify")
            .arg(&data)
            .arg(&hash)
            .arg(rh))
    };
    verify().assert_success();
    let mut bytes = fs::read(&data).unwrap();
    bytes[1100] ^= 0x01;
    fs::write(&data, bytes).unwrap();
    let out = verify();
    assert_ne!(out.code(), Some(0), "a flipped byte still verifies:\n{out}");
}

#[test]
fn an_mbr_disk_from_definitions_holds_a_blob_at_sector_64_and_its_manifest_owners() {
    let user = setup();
    let dir = tempdir_for(&user);
    let defs = definitions(&user, dir.path(), "mbr");
    let src = tree(&user, dir.path());
    let blob = dir.path().join("idbloader.img");
    write_as(&user, &blob, vec![0xA5u8; 30_000]);
    let img = dir.path().join("mbr.img");
    let out = run(rootbox(&user).args([
        "disk",
        "--definitions",
        s(&defs),
        "--copy-source",
        s(&src),
        "--table",
        "mbr",
        "--blob",
        &format!("{}@64", blob.display()),
        "--json",
        "-o",
        s(&img),
    ]));
    out.assert_success();
    let t = run(Command::new("sfdisk").arg("--json").arg(&img));
    t.assert_success();
    let t: Value = serde_json::from_str(&t.stdout).unwrap();
    let pt = &t["partitiontable"];
    assert_eq!(pt["label"], "dos", "{t:#}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "ef", "{t:#}");
    assert_eq!(parts[1]["type"], "83", "{t:#}");
    assert_eq!(parts[1]["start"], 32768, "{t:#}");
    // X-Rootbox-Owners=: alice's home is hers, rootless and without
    // subordinate ids; read with rootbox's ext4 reader and e2fsck.
    let r = json(&out);
    let root = dir.path().join("mbr-root.part");
    extract(&img, &r["partitions"][1], &root);
    give_to(&user, &root);
    let e2fsck = run(Command::new("e2fsck").args(["-fn", s(&root)]));
    e2fsck.assert_success();
    let read = run(rootbox(&user).args(["__fs-read", "--filesystem", "ext4", s(&root)]));
    read.assert_success();
    let entries = json(&read);
    let entry = |path: &str| -> (u64, u64, u64) {
        let e = entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in {entries:#}"));
        (
            e["uid"].as_u64().unwrap(),
            e["gid"].as_u64().unwrap(),
            e["mode"].as_u64().unwrap() & 0o7777,
        )
    };
    assert_eq!(entry("/home/alice/.profile"), (1000, 100, 0o644));
    assert_eq!(entry("/etc/hostname"), (0, 0, 0o640));
    let disk = fs::read(&img).unwrap();
    assert!(
        disk[64 * 512..64 * 512 + 30_000].iter().all(|&b| b == 0xA5),
        "the blob is not at sector 64"
    );
}

/// The same definitions through systemd-repart 262 (in the sid tree
/// scripts/setup-sid makes, named by ROOTBOX_SID_TREE), run as nixpkgs
/// runs it (`unshare --map-root-user fakeroot`), and through rootbox: the
/// tables agree in types, labels, order and flags, and the read-only
/// partitions in size; each verity pair's GUIDs are its root hash's
/// halves; `@` holds the same names and modes; repart's image is 0:0
/// throughout, rootbox's keeps alice 1000:100.
#[test]
#[ignore = "needs the sid tree with systemd-repart 262 (ROOTBOX_SID_TREE): scripts/test's sid-repart suite runs it"]
fn side_by_side_with_systemd_repart_262() {
    let sid = std::env::var("ROOTBOX_SID_TREE").expect("ROOTBOX_SID_TREE names the sid tree");
    let user = setup();
    assert!(is_root(), "entering the sid tree needs root");
    let dir = tempdir_for(&user);
    let (r, img) = full_disk(&user, dir.path());
    // repart's tree: the same, alice's home 1000:100 as the issue measured.
    let rdir = dir.path().join("r");
    let rsrc = tree(&user, &rdir);
    for p in [rsrc.join("home/alice"), rsrc.join("home/alice/.profile")] {
        std::os::unix::fs::lchown(&p, Some(1000), Some(100)).unwrap();
    }
    // Made by root: repart (root in a namespace that maps only root) may
    // not write into the test user's directory.
    let rout = dir.path().join("repart-out");
    fs::create_dir(&rout).unwrap();
    let rimg = rout.join("repart.img");
    let enter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sid/enter");
    let t0 = std::time::Instant::now();
    let out = run(Command::new(enter)
        .args([sid.as_str(), "--bind", s(dir.path()), "--"])
        .args(["unshare", "--map-root-user", "fakeroot", "systemd-repart"])
        .args([
            "--offline=yes",
            "--empty=create",
            "--size=auto",
            "--dry-run=no",
            "--json=short",
        ])
        .arg(format!(
            "--definitions={}",
            dir.path().join("full").display()
        ))
        .arg(format!("--copy-source={}", rsrc.display()))
        .arg(&rimg));
    out.assert_success();
    eprintln!(
        "systemd-repart: {:.2} s; rootbox: {:.2} s (2 shared cores, under load)",
        t0.elapsed().as_secs_f64(),
        r["timings"]["total"].as_f64().unwrap_or(0.0)
    );
    let rj: Value = serde_json::from_str(&out.stdout).unwrap();
    let table = |img: &Path| -> Vec<Value> {
        let t = run(Command::new("sfdisk").arg("--json").arg(img));
        t.assert_success();
        let v: Value = serde_json::from_str(&t.stdout).unwrap();
        v["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (mine, theirs) = (table(&img), table(&rimg));
    let shape = |ps: &[Value]| -> Vec<String> {
        ps.iter()
            .map(|p| format!("{} {} {}", p["name"], p["type"], p["attrs"]))
            .collect()
    };
    assert_eq!(
        shape(&mine),
        shape(&theirs),
        "rootbox {mine:#?}\nrepart {theirs:#?}"
    );
    for i in [2, 3] {
        assert_eq!(mine[i]["size"], theirs[i]["size"], "partition {}", i + 1);
    }
    let rh = rj[2]["roothash"].as_str().expect("repart's root hash");
    let guid = |p: &Value| p["uuid"].as_str().unwrap().replace('-', "").to_lowercase();
    assert_eq!(
        (guid(&theirs[2]), guid(&theirs[3])),
        (rh[..32].to_string(), rh[32..].to_string())
    );
    assert_eq!(
        r["partitions"][2]["roothash"],
        r["partitions"][3]["roothash"]
    );
    // Owners and names in the btrfs root.
    let read = |img: &Path, p: &Value, name: &str| {
        let part = dir.path().join(name);
        extract(img, p, &part);
        give_to(&user, &part);
        Inspected::of(&user, &part)
    };
    let ours = read(&img, &r["partitions"][1], "ours.part");
    let start = theirs[1]["start"].as_u64().unwrap();
    let rp = serde_json::json!({"start_sector": start, "sectors": theirs[1]["size"]});
    let repart = read(&rimg, &rp, "repart.part");
    let in_at = |i: &Inspected| -> Vec<(String, u64)> {
        i.entries
            .iter()
            .filter(|(k, _)| k.starts_with("@/"))
            .map(|(k, e)| (k.clone(), e["mode"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(in_at(&ours), in_at(&repart), "@ differs");
    let not_root: Vec<&String> = repart
        .entries
        .iter()
        .filter(|(_, e)| e["uid"] != 0 || e["gid"] != 0)
        .map(|(k, _)| k)
        .collect();
    assert!(not_root.is_empty(), "repart kept an owner: {not_root:?}");
    let (u, g, _) = ours.owner_mode("@home/alice/.profile");
    assert_eq!((u, g), (1000, 100));
    // The erofs /usr: the same names, modes, owners and file contents.
    let usr = |img: &Path, p: &Value, name: &str| -> Vec<String> {
        let part = dir.path().join(name);
        extract(img, p, &part);
        give_to(&user, &part);
        let out = run(rootbox(&user).args(["__fs-read", "--filesystem", "erofs", s(&part)]));
        out.assert_success();
        let mut v: Vec<String> = json(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}:{} {}",
                    e["path"], e["mode"], e["uid"], e["gid"], e["target"]
                )
            })
            .collect();
        // Content: extracted with erofs-utils' own fsck.erofs.
        let ex = dir.path().join(format!("{name}.x"));
        run(Command::new("fsck.erofs")
            .arg(format!("--extract={}", ex.display()))
            .arg(&part))
        .assert_success();
        for f in ["lib/os-release", "bin/tool"] {
            v.push(format!("{f}: {:?}", fs::read(ex.join(f)).unwrap()));
        }
        v.sort();
        v
    };
    let rp = serde_json::json!({"start_sector": theirs[2]["start"], "sectors": theirs[2]["size"]});
    assert_eq!(
        usr(&img, &r["partitions"][2], "ours-usr.part"),
        usr(&rimg, &rp, "repart-usr.part")
    );
}
