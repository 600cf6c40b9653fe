//! `rootbox disk --example`: three layouts people flash or boot, with
//! dummy boot blobs and a small root filesystem:
//! - `rpi`: a Raspberry-Pi-style MBR (what nixpkgs' sd-image.nix makes): a
//!   bootable FAT firmware partition (type `b`) at 8 MiB, then a btrfs
//!   root with `@`, `@nix` and `@home`;
//! - `rock64`: a Rock64-style GPT (nixos-sbc's): `idbloader.img` raw at
//!   sector 64, a `uboot` partition at sectors 16384–32767 holding
//!   `u-boot.itb`, the root at 32768 with the legacy-bootable attribute
//!   (bit 2) U-Boot's extlinux scan looks for;
//! - `uefi`: a GPT with an EFI system partition and a root partition.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rootbox_images::disk::DiskSpec;

use super::make::make;
use super::options::Options;
use super::report::print_summary;

/// The examples, by name.
pub const NAMES: [&str; 3] = ["rpi", "rock64", "uefi"];

const ROOT_BTRFS: &str = r#"{"label": "nixos", "rootfs": "root", "subvolumes": [
        {"name": "@", "mountpoint": "/", "type": "default"},
        {"name": "@nix", "mountpoint": "/nix"},
        {"name": "@home", "mountpoint": "/home"}]}"#;

/// The spec of example `name`, as JSON (paths relative to the sources
/// directory).
pub fn spec_json(name: &str) -> Option<String> {
    let s = match name {
        "rpi" => format!(
            r#"{{
  "table": "mbr",
  "diskId": "0x2178694e",
  "partitions": [
    {{"name": "firmware", "startSector": 16384, "size": "30M", "type": "b", "bootable": true,
      "content": {{"fat": {{"dir": "firmware", "label": "FIRMWARE", "volumeId": "0x2178694e"}}}}}},
    {{"name": "root", "type": "linux", "headroom": "16M",
      "content": {{"btrfs": {ROOT_BTRFS}}}}}
  ]
}}
"#
        ),
        "rock64" => format!(
            r#"{{
  "table": "gpt",
  "alignment": "1K",
  "blobs": [{{"file": "idbloader.img", "sector": 64, "maxSize": "8032K"}}],
  "partitions": [
    {{"name": "uboot", "startSector": 16384, "size": "8M", "type": "linux",
      "content": {{"raw": "u-boot.itb"}}}},
    {{"name": "root", "startSector": 32768, "type": "root-arm64", "attributes": ["legacy-bootable"],
      "content": {{"btrfs": {ROOT_BTRFS}}}}}
  ]
}}
"#
        ),
        "uefi" => format!(
            r#"{{
  "table": "gpt",
  "partitions": [
    {{"name": "ESP", "size": "64M", "type": "esp",
      "content": {{"fat": {{"dir": "esp", "label": "ESP", "fatSize": 32}}}}}},
    {{"name": "root", "type": "root-x86-64",
      "content": {{"btrfs": {ROOT_BTRFS}}}}}
  ]
}}
"#
        ),
        _ => return None,
    };
    Some(s)
}

fn write(p: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    fs::write(p, bytes).with_context(|| format!("writing {}", p.display()))
}

/// Dummy bytes that are not zeros (so they are data, not holes).
fn pattern(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

/// Writes the inputs every example uses (firmware and ESP trees, blobs, a
/// root filesystem) and the three specs into `dir`.
pub fn write_sources(dir: &Path) -> Result<()> {
    write(
        &dir.join("firmware/config.txt"),
        "arm_64bit=1\nenable_uart=1\navoid_warnings=1\n",
    )?;
    write(&dir.join("firmware/start4.elf"), pattern(64 << 10, 1))?;
    write(
        &dir.join("firmware/bcm2711-rpi-4-b.dtb"),
        pattern(32 << 10, 2),
    )?;
    write(&dir.join("firmware/overlays/README"), "dummy overlays\n")?;
    write(&dir.join("firmware/extlinux/extlinux.conf"), "DEFAULT nixos\nLABEL nixos\n  LINUX /Image\n  APPEND root=PARTLABEL=root rootflags=subvol=@\n")?;
    write(&dir.join("esp/EFI/BOOT/BOOTX64.EFI"), pattern(128 << 10, 3))?;
    write(&dir.join("esp/loader/loader.conf"), "timeout 3\n")?;
    write(&dir.join("idbloader.img"), pattern(100 << 10, 4))?;
    write(&dir.join("u-boot.itb"), pattern(600 << 10, 5))?;
    let root = dir.join("root");
    write(&root.join("etc/hostname"), "rootbox-example\n")?;
    write(
        &root.join("etc/os-release"),
        "NAME=rootbox-example\nID=nixos\n",
    )?;
    write(
        &root.join("nix/store/00000000000000000000000000000000-hello/bin/hello"),
        "#!/bin/sh\necho hello\n",
    )?;
    fs::set_permissions(
        root.join("nix/store/00000000000000000000000000000000-hello/bin/hello"),
        fs::Permissions::from_mode(0o755),
    )?;
    write(&root.join("home/alice/notes.txt"), "alice's notes\n")?;
    fs::create_dir_all(root.join("root"))?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))?;
    for name in NAMES {
        write(
            &dir.join(format!("{name}.json")),
            spec_json(name).expect("known"),
        )?;
    }
    Ok(())
}

/// `rootbox disk --example [NAME] -o DIR|FILE`.
pub fn main(name: &str, output: Option<&Path>, as_json: bool, opts: Options) -> Result<ExitCode> {
    let opts = Options {
        force: true,
        ..opts
    };
    if name == "all" {
        let dir = output
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("rootbox-disk-examples"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let sources = dir.join("sources");
        write_sources(&sources)?;
        for n in NAMES {
            let spec = DiskSpec::from_json_file(&sources.join(format!("{n}.json")))?;
            let r = make(&spec, &dir.join(format!("{n}.img")), &opts)
                .with_context(|| format!("the {n} example"))?;
            print_summary(&r);
            println!();
        }
        println!("the specs and their inputs are in {}", sources.display());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(json) = spec_json(name) else {
        bail!(
            "no example {name:?}: choose one of {}, or give no name for all",
            NAMES.join(", ")
        );
    };
    let out = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{name}.img")));
    let tmp = tempfile::Builder::new()
        .prefix("rootbox-disk-example-")
        .tempdir()?;
    write_sources(tmp.path())?;
    let mut spec = DiskSpec::from_json_str(&json, &format!("the {name} example"))?;
    spec.resolve_relative_paths(tmp.path());
    let r = make(&spec, &out, &opts)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_summary(&r);
    }
    Ok(ExitCode::SUCCESS)
}
