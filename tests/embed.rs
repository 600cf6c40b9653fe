//! rootbox as a library inside another program: `runner/examples/embed.rs`
//! (an image tool that calls `rootbox::pipeline::build` and
//! `rootbox::disk::make` and hands rootbox's internal steps to rootbox
//! first) run as the unprivileged test user. Its image and disk are read
//! back with `rootbox inspect --json`, `btrfs check` and `sfdisk --json`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The example program, built by `cargo test` (which builds the examples
/// beside the test binaries) or `cargo build --examples`, copied where the
/// test user can run it.
fn example_bin(user: &User) -> (tempfile::TempDir, PathBuf) {
    let built = Path::new(env!("CARGO_BIN_EXE_rootbox"))
        .parent()
        .expect("target dir")
        .join("examples/embed");
    assert!(
        built.is_file(),
        "{} is missing: run the tests with plain `cargo test` (which builds the examples) \
         or `cargo build --examples` first",
        built.display()
    );
    let dir = tempdir_for(user);
    let bin = dir.path().join("embed");
    fs::copy(&built, &bin).expect("copying the example");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, bin)
}

#[test]
fn a_program_embedding_the_library_builds_an_image_and_a_disk() {
    let user = test_user();
    assert_unprivileged(&user);
    let (_bin_dir, bin) = example_bin(&user);
    let out_dir = tempdir_for(&user);
    let out = run(cmd_as(&user, &bin).arg(out_dir.path()));
    out.assert_success();
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the example printed no JSON ({e}):\n{out}"));

    // The image: every entry root's, as the build's own report says and
    // as rootbox's reader reads it back.
    let image = out_dir.path().join("root.img");
    assert_eq!(v["image"]["verified"], true, "{out}");
    let seen = Inspected::of(&user, &image);
    assert_eq!(seen.not_root_owned(), Vec::<String>::new());
    assert_eq!(seen.owner_mode("@/root/.ssh/authorized_keys").0, 0);
    assert_btrfs_check(&image);

    // The disk: an ESP and an ext4 root partition, as sfdisk reads the
    // table and as the disk's own report says.
    let disk = out_dir.path().join("disk.img");
    assert_eq!(v["disk"]["verified"], true, "{out}");
    let table = run(Command::new("sfdisk").arg("--json").arg(&disk));
    table.assert_success();
    let t: Value = serde_json::from_str(&table.stdout).expect("sfdisk --json");
    let parts = t["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["esp", "root"], "{}", table.stdout);
    assert_eq!(
        parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "the ESP's type GUID"
    );
    let kinds: Vec<&str> = v["disk"]["partitions"]
        .as_array()
        .expect("the disk report's partitions")
        .iter()
        .map(|p| p["content"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["vfat", "ext4"], "{out}");

    // Nothing of the staging steps is left beside the outputs.
    let mut left: Vec<String> = fs::read_dir(out_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["disk.img", "esp", "root.img", "tree"]);
}
