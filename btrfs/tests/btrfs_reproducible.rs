//! Reproducible btrfs images: two `mkfs.btrfs --rootdir` runs over the same
//! tree, made at different wall-clock times, are byte-identical after
//! `Rewriter::make_reproducible` (times clamped, UUIDs derived from a seed,
//! leftovers zeroed).
//!
//! Every test runs `btrfs check` on what it produced. The mount parts and
//! the staging-filesystem comparison need root (CI runs as root); elsewhere
//! they are skipped with a message.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::assert_check_clean;
use common::*;
use rootbox_btrfs::format::format_uuid;
use rootbox_btrfs::{derived_uuid, Image, ReproducibleStats, RewriteError, Rewriter};

const FSID: &str = "44444444-4444-4444-8888-888888888888";
const DEVICE_UUID: &str = "55555555-5555-5555-8888-888888888888";
const EPOCH: i64 = 1_600_000_000;
const SEED: &[u8] = b"rootbox test seed";

/// A small NixOS-like tree: `@` (the default subvolume) and `@nix`, with
/// files, a symlink, a hard link, a big file (a data extent) and every
/// time fixed (as a build from a Nix store path has them).
fn build_tree(root: &Path) {
    for d in [
        "@/etc/ssh",
        "@/home/user",
        "@/var/log",
        "@nix/store/abc-hello/bin",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).unwrap();
    w("@/etc/hostname", b"rootbox\n");
    w("@/etc/ssh/sshd_config", b"PermitRootLogin no\n");
    w("@/home/user/.profile", b"export A=1\n");
    w("@nix/store/abc-hello/bin/hello", &vec![0x7fu8; 200_000]);
    w("@nix/nix-path-registration", b"/nix/store/abc-hello\n");
    std::os::unix::fs::symlink("/nix/store/abc-hello/bin/hello", root.join("@/etc/hello")).unwrap();
    fs::hard_link(root.join("@/etc/hostname"), root.join("@/etc/hostname.bak")).unwrap();
    fix_times(root);
}

/// Every atime and mtime in the tree to `EPOCH - 1000` (ctime cannot be
/// set; `clamp_times` brings it down to the epoch).
fn fix_times(root: &Path) {
    run(Command::new("find").arg(root).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{}", EPOCH - 1000),
        "{}",
        "+",
    ]));
}

/// `mkfs.btrfs` as rootbox runs it in reproducible mode.
fn mkfs(root: &Path, img: &Path, size: Option<u64>, extra: &[&str]) {
    let f = File::create(img).unwrap();
    if let Some(size) = size {
        f.set_len(size).unwrap();
    }
    run(Command::new("mkfs.btrfs")
        .args(["-q", "-f", "--rootdir"])
        .arg(root)
        .args(["-U", FSID, "--device-uuid", DEVICE_UUID])
        .args(extra)
        .args(if size.is_none() {
            &["--shrink"][..]
        } else {
            &[]
        })
        .arg(img));
}

/// `make_reproducible` and commit; the stats of the call.
fn make_reproducible(img: &Path, seed: &[u8]) -> ReproducibleStats {
    let mut rw = Rewriter::open(img).unwrap();
    let stats = rw.make_reproducible(EPOCH, seed).unwrap();
    eprintln!("{}: {stats:?}", img.display());
    rw.commit().unwrap();
    stats
}

#[test]
fn two_runs_are_byte_identical() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    build_tree(&root);
    let subvols = ["--subvol", "rw:@nix", "--subvol", "default:@"];
    // Shrunk (about 100 MiB: past the superblock copy at 64 MiB) and a
    // 512 MiB sparse file with room to spare.
    for (name, size) in [("shrunk", None), ("512M", Some(512u64 << 20))] {
        let a = dir.path().join(format!("{name}-a.img"));
        let b = dir.path().join(format!("{name}-b.img"));
        fix_times(&root);
        mkfs(&root, &a, size, &subvols);
        // root items and inode times take time(NULL).
        std::thread::sleep(std::time::Duration::from_millis(2100));
        // mkfs read the files, and relatime moved their atime to now; a
        // fresh staging tree has its own times again.
        fix_times(&root);
        mkfs(&root, &b, size, &subvols);
        assert_ne!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "mkfs alone");

        let stats = make_reproducible(&a, SEED);
        // Three subvolumes (5, @nix, @), leftovers of mkfs's first layout.
        assert_eq!(stats.uuids.root_items_changed, 3, "{stats:?}");
        assert!(stats.zeroed.bytes_zeroed > 0, "{stats:?}");
        make_reproducible(&b, SEED);
        let (ha, hb) = (sha256sum(&a), sha256sum(&b));
        eprintln!("{name}: sha256 {ha} / {hb}");
        if fs::read(&a).unwrap() != fs::read(&b).unwrap() {
            let out = Command::new("cmp")
                .arg("-l")
                .arg(&a)
                .arg(&b)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let head: Vec<&str> = text.lines().take(40).collect();
            panic!(
                "{name}: images differ (offset, octal bytes):\n{}",
                head.join("\n")
            );
        }
        assert_eq!(ha, hb);

        assert_check_clean(&a);
        assert_derived_uuids(&a, SEED);
        assert_files(&a, "@", "etc/hostname", b"rootbox\n");
        assert_files(
            &a,
            "@nix",
            "store/abc-hello/bin/hello",
            &vec![0x7fu8; 200_000],
        );

        // Doing it again changes nothing.
        let before = fs::read(&a).unwrap();
        let again = make_reproducible(&a, SEED);
        assert_eq!(again.uuids.blocks_changed, 0, "{again:?}");
        assert_eq!(again.zeroed.bytes_zeroed, 0, "{again:?}");
        assert!(fs::read(&a).unwrap() == before, "{name}: not idempotent");
    }
}

#[test]
fn different_seeds_give_different_uuids() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    build_tree(&root);
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    mkfs(
        &root,
        &a,
        None,
        &["--subvol", "rw:@nix", "--subvol", "default:@"],
    );
    fs::copy(&a, &b).unwrap();
    make_reproducible(&a, b"seed one");
    make_reproducible(&b, b"seed two");
    assert_check_clean(&a);
    assert_check_clean(&b);
    assert_derived_uuids(&a, b"seed one");
    assert_derived_uuids(&b, b"seed two");
    assert_ne!(chunk_tree_uuid(&a), chunk_tree_uuid(&b));
    let (ua, ub) = (subvolume_uuids(&a), subvolume_uuids(&b));
    assert_eq!(ua.len(), 3);
    for (id, u) in &ua {
        assert_ne!(Some(u), ub.get(id), "subvolume {id}");
    }
    // The fsid and device UUID come from mkfs (-U, --device-uuid).
    let sb = dump_super(&b);
    assert!(sb.contains(&format!("fsid\t\t\t{FSID}")), "{sb}");
    assert!(
        sb.contains(&format!("dev_item.uuid\t\t{DEVICE_UUID}")),
        "{sb}"
    );
}

#[test]
fn corrupted_copy_is_refused() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    build_tree(&root);
    let img = dir.path().join("a.img");
    mkfs(
        &root,
        &img,
        None,
        &["--subvol", "rw:@nix", "--subvol", "default:@"],
    );
    // Corrupt the second (DUP) copy of the UUID tree leaf: the reader
    // reads the first and is content; the rewriter must not be.
    let image = Image::open(&img).unwrap();
    let leaf = image.tree_blocks(9).unwrap()[0].logical;
    let copies = image.physical_copies(leaf).unwrap();
    assert_eq!(copies.len(), 2);
    drop(image);
    let f = File::options().write(true).open(&img).unwrap();
    f.write_all_at(&[0xa5], copies[1] + 2000).unwrap();
    drop(f);
    let before = fs::read(&img).unwrap();

    let mut rw = Rewriter::open(&img).unwrap();
    rw.clamp_times(EPOCH).unwrap();
    let err = rw.derive_uuids(SEED).unwrap_err();
    assert!(err.is_checksum_error(), "{err:?}");
    assert!(matches!(rw.commit(), Err(RewriteError::Unsupported(_))));
    assert!(
        fs::read(&img).unwrap() == before,
        "file written after an error"
    );
}

#[test]
fn uuid_tree_of_more_than_one_leaf_is_refused() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // 33 bytes per UUID item: 600 subvolumes need two 16 KiB leaves.
    let mut args = Vec::new();
    for i in 0..600 {
        fs::create_dir_all(root.join(format!("sv{i:03}"))).unwrap();
        args.push("--subvol".to_string());
        args.push(format!("rw:sv{i:03}"));
    }
    fix_times(&root);
    let img = dir.path().join("a.img");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mkfs(&root, &img, None, &args);
    let before = fs::read(&img).unwrap();
    let mut rw = Rewriter::open(&img).unwrap();
    match rw.derive_uuids(SEED) {
        Err(RewriteError::UuidTreeTooLarge { levels }) => assert!(levels >= 2),
        other => panic!("{other:?}"),
    }
    assert!(rw.commit().is_err());
    assert!(fs::read(&img).unwrap() == before);
}

/// mkfs numbers inodes in the order `nftw` meets them, which is the
/// staging filesystem's readdir order, depth first. A tree copied onto a
/// tmpfs and onto an ext4 gives different images; sorted staging on
/// tmpfs (readdir: newest first) gives the same image every time.
#[test]
fn staging_filesystem_decides_inode_numbers() {
    require_mkfs!();
    if !is_root() {
        skipped(format_args!("mounting tmpfs and ext4 needs root"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "zeta", "alpha", "mid", "beta", "omega", "10", "2", "a_dir", "x.conf",
    ];
    let mut images = BTreeMap::new();
    let mut orders = BTreeMap::new();
    for (label, fstype, sorted) in [
        ("tmpfs", "tmpfs", false),
        ("ext4", "ext4", false),
        ("tmpfs-sorted-1", "tmpfs", true),
        ("tmpfs-sorted-2", "tmpfs", true),
    ] {
        let stage = Staging::new(dir.path(), label, fstype);
        let root = stage.dir.join("t");
        fs::create_dir(&root).unwrap();
        let mut list: Vec<&str> = names.to_vec();
        if sorted {
            list.sort_unstable();
        }
        for n in &list {
            fs::write(root.join(n), n.as_bytes()).unwrap();
        }
        fix_times(&root);
        let readdir: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let img = dir.path().join(format!("{label}.img"));
        mkfs(&root, &img, None, &[]);
        make_reproducible_plain(&img);
        assert_check_clean(&img);
        // Inode numbers, in order, name the files in readdir order.
        let by_ino = inode_order(&img, 5);
        eprintln!("{label}: readdir {readdir:?}\n{label}: image inode order {by_ino:?}");
        assert_eq!(
            by_ino, readdir,
            "{label}: mkfs numbers inodes in readdir order"
        );
        images.insert(label, fs::read(&img).unwrap());
        orders.insert(label, by_ino);
    }
    let same = images["tmpfs"] == images["ext4"];
    eprintln!("tmpfs vs ext4 staging (same creation order): images identical: {same}");
    assert!(
        images["tmpfs-sorted-1"] == images["tmpfs-sorted-2"],
        "sorted staging on tmpfs must be reproducible"
    );
    let mut reverse_sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    reverse_sorted.sort_unstable();
    reverse_sorted.reverse();
    assert_eq!(
        orders["tmpfs-sorted-1"], reverse_sorted,
        "tmpfs readdir is newest first"
    );
}

// -- helpers -------------------------------------------------------------------

fn make_reproducible_plain(img: &Path) {
    let mut rw = Rewriter::open(img).unwrap();
    rw.make_reproducible(EPOCH, SEED).unwrap();
    rw.commit().unwrap();
}

/// Names of the entries of the top directory of `tree`, by inode number.
fn inode_order(img: &Path, tree: u64) -> Vec<String> {
    let image = Image::open(img).unwrap();
    let mut found = Vec::new();
    image
        .walk(tree, &mut |e| {
            if !e.path.is_empty() && !e.path.contains(&b'/') {
                found.push((e.ino, String::from_utf8(e.path.clone()).unwrap()));
            }
            Ok(())
        })
        .unwrap();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// A tmpfs or a fresh ext4 (on a loop file) mounted until dropped.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(base: &Path, label: &str, fstype: &str) -> Staging {
        let dir = base.join(format!("stage-{label}"));
        fs::create_dir(&dir).unwrap();
        if fstype == "tmpfs" {
            run(Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&dir));
        } else {
            let backing = base.join(format!("stage-{label}.ext4"));
            File::create(&backing).unwrap().set_len(64 << 20).unwrap();
            run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&backing));
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&backing)
                .arg(&dir));
        }
        Staging { dir }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// The chunk tree UUID and subvolume UUIDs are the ones `seed` gives,
/// everywhere `btrfs inspect-internal` shows them; the UUID tree is keyed
/// by them, in order.
fn assert_derived_uuids(img: &Path, seed: &[u8]) {
    let chunk = format_uuid(&derived_uuid(seed, "chunk-tree", &[]));
    assert_eq!(chunk_tree_uuid(img), chunk);
    let dump = run(Command::new("btrfs")
        .args(["inspect-internal", "dump-tree"])
        .arg(img));
    for line in dump.lines() {
        if let Some(u) = line.strip_prefix("chunk uuid ") {
            assert_eq!(u, chunk, "a tree block header");
        }
        if let Some(u) = line.trim().strip_prefix("chunk_tree_uuid ") {
            assert_eq!(u, chunk, "a device extent");
        }
    }
    let uuids = subvolume_uuids(img);
    for (id, u) in &uuids {
        assert_eq!(*u, format_uuid(&derived_uuid(seed, "subvolume", &[*id, 0])));
    }
    // The UUID tree: one UUID_KEY_SUBVOL item per subvolume, keys in order.
    let tree = run(Command::new("btrfs")
        .args(["inspect-internal", "dump-tree", "-t", "9"])
        .arg(img));
    let mut keys = Vec::new();
    for line in tree.lines() {
        if !line.trim_start().starts_with("item ") {
            continue;
        }
        let Some(rest) = line.split("key (").nth(1) else {
            continue;
        };
        let mut f = rest.split([' ', ')']);
        let (hi, kind, lo) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        assert_eq!(kind, "UUID_KEY_SUBVOL", "{line}");
        let hi = u64::from_str_radix(hi.trim_start_matches("0x"), 16).unwrap();
        let lo = u64::from_str_radix(lo.trim_start_matches("0x"), 16).unwrap();
        keys.push((hi, lo));
    }
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{tree}");
    let mut want: Vec<(u64, u64)> = uuids
        .keys()
        .map(|id| {
            let u = derived_uuid(seed, "subvolume", &[*id, 0]);
            (
                u64::from_le_bytes(u[..8].try_into().unwrap()),
                u64::from_le_bytes(u[8..].try_into().unwrap()),
            )
        })
        .collect();
    want.sort_unstable();
    assert_eq!(keys, want, "{tree}");
}

fn chunk_tree_uuid(img: &Path) -> String {
    let dump = run(Command::new("btrfs")
        .args(["inspect-internal", "dump-tree", "-t", "chunk"])
        .arg(img));
    dump.lines()
        .find_map(|l| l.strip_prefix("chunk uuid "))
        .unwrap()
        .to_string()
}

fn subvolume_uuids(img: &Path) -> BTreeMap<u64, String> {
    Image::open(img)
        .unwrap()
        .subvolumes()
        .unwrap()
        .into_iter()
        .map(|sv| (sv.id, sv.uuid))
        .collect()
}

fn dump_super(img: &Path) -> String {
    run(Command::new("btrfs")
        .args(["inspect-internal", "dump-super", "-f"])
        .arg(img))
}

/// As root: a read-only mount of `subvol` shows `path` with `content`;
/// then a read-write mount works and `btrfs check` still passes after it.
fn assert_files(img: &Path, subvol: &str, path: &str, content: &[u8]) {
    if !is_root() {
        skip_note(&format!("mounting {}", img.display()));
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    run(Command::new("mount")
        .args(["-t", "btrfs", "-o", &format!("loop,ro,subvol={subvol}")])
        .arg(img)
        .arg(mnt.path()));
    let got = fs::read(mnt.path().join(path));
    let list = run(Command::new("btrfs")
        .args(["subvolume", "list", "-u"])
        .arg(mnt.path()));
    run(Command::new("umount").arg(mnt.path()));
    assert_eq!(got.unwrap(), content);
    for (id, u) in subvolume_uuids(img) {
        if id != 5 {
            assert!(list.contains(&u), "{list}");
        }
    }
    // A read-write mount of a copy: the kernel accepts the derived chunk
    // tree UUID for new blocks and the re-keyed UUID tree.
    let copy = img.with_extension("rw");
    fs::copy(img, &copy).unwrap();
    run(Command::new("mount")
        .args(["-t", "btrfs", "-o", "loop"])
        .arg(&copy)
        .arg(mnt.path()));
    fs::write(mnt.path().join("new-file"), b"x").unwrap();
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot"])
        .arg(mnt.path())
        .arg(mnt.path().join("snap")));
    run(Command::new("umount").arg(mnt.path()));
    assert_check_clean(&copy);
    fs::remove_file(&copy).unwrap();
}

fn sha256sum(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `clamp_root_tree_times` (the reproducible pass after a mkfs that set
/// every inode's times) clamps the root items and leaves the subvolumes'
/// inodes alone; `clamp_times` afterwards finds only those inodes.
#[test]
fn clamping_the_root_tree_leaves_the_inodes_to_clamp_times() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    build_tree(&root);
    let img = dir.path().join("a.img");
    // Made now: the root items' times are the wall clock, past EPOCH, and
    // so are the inodes' ctimes.
    mkfs(
        &root,
        &img,
        None,
        &["--subvol", "rw:@nix", "--subvol", "default:@"],
    );
    let mut rw = Rewriter::open(&img).unwrap();
    let root_only = rw.clamp_root_tree_times(EPOCH).unwrap();
    assert!(root_only.root_items_changed >= 1, "{root_only:?}");
    let all = rw.clamp_times(EPOCH).unwrap();
    assert_eq!(all.root_items_changed, 0, "{all:?}");
    assert!(all.inodes_changed > 10, "{all:?}");
    assert!(all.inodes > root_only.inodes, "{root_only:?} {all:?}");
    rw.commit().unwrap();
    assert_check_clean(&img);
}
