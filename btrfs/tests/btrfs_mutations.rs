//! The reader against deterministic mutations of small real images: bit
//! flips at many offsets of every block it reads (with and without the
//! checksum recomputed) and truncations, each run through the full walk
//! the fuzz target `fuzz/fuzz_targets/btrfs_image.rs` runs. Each must end
//! in `Ok` or an error, never a panic. This is the part of the fuzzing
//! that CI runs without cargo-fuzz; the seeds it builds are the fuzz
//! corpus (`ROOTBOX_WRITE_FUZZ_SEEDS=DIR` writes them to DIR).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, FileExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::run;
use common::sparse_image::{self, exercise, outcome, FIX_CHECKSUMS};
use rootbox_btrfs::Image;

/// A tiny tree with one of each thing the walk reports: directories, a
/// file with content, a hard link, a symlink, xattrs, a fifo.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::create_dir_all(root.join("sub/inner")).unwrap();
    fs::write(root.join("etc/hostname"), b"rootbox\n").unwrap();
    fs::write(root.join("etc/ssh/sshd_config"), vec![b'x'; 5000]).unwrap();
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.link")).unwrap();
    symlink("../etc/hostname", root.join("sub/link")).unwrap();
    xattr::set(root.join("etc/hostname"), "user.rootbox", b"value").unwrap();
    xattr::set(root.join("sub/inner"), "user.empty", b"").unwrap();
    run(std::process::Command::new("mkfifo").arg(root.join("sub/fifo")));
}

/// `mkfs.btrfs --rootdir` of `root` into a 128 MiB sparse file.
fn mkfs(root: &Path, img: &Path, args: &[&str]) {
    File::create(img).unwrap().set_len(128 << 20).unwrap();
    run(std::process::Command::new("mkfs.btrfs")
        .args(["-q", "-f", "--rootdir"])
        .arg(root)
        .args(args)
        .arg(img));
}

/// The bytes the reader needs: the superblock and every copy of every
/// block of the chunk tree, the root tree and each subvolume's tree.
fn live_ranges(img: &Path) -> Vec<(u64, Vec<u8>)> {
    let image = Image::open(img).unwrap();
    let nodesize = image.info().nodesize as usize;
    let mut trees = vec![1, 3];
    trees.extend(image.subvolumes().unwrap().iter().map(|sv| sv.id));
    let f = File::open(img).unwrap();
    let read = |at: u64, len: usize| {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, at).unwrap();
        (at, b)
    };
    let mut out = BTreeMap::new();
    let (at, sb) = read(0x1_0000, 4096);
    out.insert(at, sb);
    for tree in trees {
        for block in image.tree_blocks(tree).unwrap() {
            for p in image.physical_copies(block.logical).unwrap() {
                let (at, b) = read(p, nodesize);
                out.insert(at, b);
            }
        }
    }
    out.into_iter().collect()
}

/// One seed: its name, the image it came from, and the sparse encoding.
struct Seed {
    name: &'static str,
    img: PathBuf,
    sparse: Vec<u8>,
}

/// Small images in the layouts rootbox builds: single metadata with 4 KiB
/// nodes and a subvolume; DUP metadata with the default 16 KiB nodes and
/// a default subvolume.
fn seeds(dir: &Path) -> Vec<Seed> {
    let src = dir.join("root");
    build_tree(&src);
    let variants: [(&str, &[&str]); 2] = [
        (
            "single-4k-subvol",
            &["-m", "single", "-n", "4096", "--subvol", "rw:sub"],
        ),
        ("dup-16k-default", &["--subvol", "default:sub"]),
    ];
    variants
        .iter()
        .map(|(name, args)| {
            let img = dir.join(format!("{name}.img"));
            mkfs(&src, &img, args);
            let sparse = sparse_image::encode(&live_ranges(&img), FIX_CHECKSUMS);
            Seed { name, img, sparse }
        })
        .collect()
}

/// Run [`exercise`] on a sparse image; `Err` with the panic message if it
/// panicked.
fn try_sparse(input: &[u8], scratch: &Path) -> Result<&'static str, String> {
    sparse_image::write(input, scratch).unwrap();
    catch_unwind(AssertUnwindSafe(|| outcome(&exercise(scratch)))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn sparse_seeds_walk_like_their_images() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch.img");
    for seed in seeds(dir.path()) {
        let full = exercise(&seed.img).unwrap();
        assert!(full >= 10, "{}: only {full} entries", seed.name);
        sparse_image::write(&seed.sparse, &scratch).unwrap();
        let sparse = exercise(&scratch)
            .unwrap_or_else(|e| panic!("{}: sparse seed does not read: {e}", seed.name));
        assert_eq!(sparse, full, "{}", seed.name);
        assert!(
            seed.sparse.len() < 256 << 10,
            "{}: seed is {} bytes",
            seed.name,
            seed.sparse.len()
        );
        eprintln!(
            "{}: {} entries, seed {} bytes",
            seed.name,
            full,
            seed.sparse.len()
        );
        if let Some(out) = std::env::var_os("ROOTBOX_WRITE_FUZZ_SEEDS") {
            fs::create_dir_all(&out).unwrap();
            fs::write(Path::new(&out).join(seed.name), &seed.sparse).unwrap();
        }
    }
}

/// The committed fuzz corpus is what the seeds above produce: each file
/// is a sparse image that reads cleanly.
#[test]
fn committed_fuzz_corpus_reads_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/btrfs_image");
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch.img");
    let mut files = 0;
    for entry in fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let input = fs::read(&path).unwrap();
        // libFuzzer adds what it finds; the seeds are the ones named here.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("single-") && !name.starts_with("dup-") {
            continue;
        }
        sparse_image::write(&input, &scratch).unwrap();
        let n = exercise(&scratch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n >= 10, "{name}: {n} entries");
        files += 1;
    }
    assert!(files >= 2, "no seeds in {}", corpus.display());
}

#[test]
fn bit_flips_and_truncations_never_panic() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    // Thousands of small files: in memory when there is a tmpfs.
    let shm = Path::new("/dev/shm");
    let scratch_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let scratch = scratch_dir.path().join("scratch.img");
    let mut outcomes = BTreeMap::<(&str, &str), usize>::new();
    let mut panics = Vec::new();
    let mut check =
        |what: &'static str, case: String, input: &[u8]| match try_sparse(input, &scratch) {
            Ok(o) => *outcomes.entry((what, o)).or_default() += 1,
            Err(msg) => panics.push(format!("{case}: {msg}")),
        };
    for seed in seeds(dir.path()) {
        let (_, extents) = sparse_image::extents(&seed.sparse);
        // Where each extent's bytes are in the encoding.
        let mut at = 1;
        let mut positions = Vec::new();
        for (_, bytes) in &extents {
            positions.push((at + 6, bytes.len()));
            at += 6 + bytes.len();
        }
        // Flip one bit at every 11th byte of the blocks, with the
        // checksums fixed up (the parsers see it) and, for every third of
        // those, not: the checksum check must catch it, and with DUP
        // metadata the reader then uses the other copy.
        let bytes = positions
            .iter()
            .flat_map(|&(start, len)| start..start + len);
        for (n, at) in bytes.enumerate().filter(|(n, _)| n % 11 == 0) {
            let mut input = seed.sparse.clone();
            input[at] ^= 1 << (n % 8);
            let case = format!("{} flip at {at}", seed.name);
            check("flip, checksum fixed", case.clone(), &input);
            if n % 33 == 0 {
                input[0] &= !FIX_CHECKSUMS;
                let what = if seed.name.starts_with("dup-") {
                    "flip (DUP)"
                } else {
                    "flip (single copy)"
                };
                check(what, case, &input);
            }
        }
        // An extent's offset or length changed: bytes land elsewhere.
        for &(start, _) in positions.iter().step_by(8) {
            for field in 0..6 {
                let at = start - 6 + field;
                let mut input = seed.sparse.clone();
                input[at] ^= 0x10;
                check("extent header", format!("{} byte {at}", seed.name), &input);
            }
        }
        // Truncations of the encoding: images missing their later blocks.
        for cut in (0..seed.sparse.len()).step_by(211) {
            check(
                "cut",
                format!("{} cut at {cut}", seed.name),
                &seed.sparse[..cut],
            );
        }
    }
    eprintln!("outcomes: {outcomes:#?}");
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
    // The mutations reached the parsers, not only the checksum check.
    let kinds = |what: &str| outcomes.keys().filter(|(w, _)| *w == what).count();
    assert!(kinds("flip, checksum fixed") >= 4, "{outcomes:?}");
    assert!(
        outcomes.contains_key(&("flip, checksum fixed", "ok")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains_key(&("flip (single copy)", "bad checksum")),
        "{outcomes:?}"
    );
    assert!(
        !outcomes.contains_key(&("flip (single copy)", "ok")),
        "{outcomes:?}"
    );
    assert!(outcomes.contains_key(&("flip (DUP)", "ok")), "{outcomes:?}");
    assert!(kinds("cut") >= 2, "{outcomes:?}");
}
