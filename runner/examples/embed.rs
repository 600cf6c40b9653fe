//! An image tool that embeds rootbox instead of running the `rootbox`
//! binary: it makes a small root tree, builds a btrfs image of it with
//! [`rootbox::pipeline::build`], then a GPT disk (an ESP and the same tree
//! as an ext4 root) with [`rootbox::disk::make`], and prints both reports
//! as JSON.
//!
//! ```text
//! cargo run --example embed -- OUTDIR
//! ```
//!
//! Its `main` hands rootbox's internal steps to rootbox first
//! ([`rootbox::internal_step`]): the builds re-execute this program to
//! stage the tree inside their sandbox. `tests/embed.rs` runs it as an
//! unprivileged user and reads both results back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rootbox::disk;
use rootbox::pipeline::request::{Options, StoreStaging};
use rootbox::pipeline::{build, BuildRequest};
use rootbox_images::disk::DiskSpec;
use rootbox_images::spec::Spec;
use rootbox_sandbox::MapMode;

fn main() -> ExitCode {
    if let Some(code) = rootbox::internal_step() {
        return code;
    }
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: embed OUTDIR (an empty or new directory)");
        return ExitCode::from(2);
    };
    match run(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(out: &Path) -> anyhow::Result<()> {
    let tree = out.join("tree");
    let esp = out.join("esp");
    write(&tree.join("etc/hostname"), "embedded\n")?;
    write(
        &tree.join("root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA… embed\n",
    )?;
    write(
        &esp.join("EFI/BOOT/README.TXT"),
        "an ESP made through the library\n",
    )?;

    // One image: the spec is the same JSON `rootbox build --spec` reads.
    let spec = Spec::from_json_str(
        &format!(
            r#"{{"label": "embedded", "rootfs": {:?},
                 "subvolumes": [{{"name": "@", "mountpoint": "/", "type": "default"}}]}}"#,
            tree
        ),
        "embed.rs",
    )?;
    let request = BuildRequest {
        spec,
        output: out.join("root.img"),
        options: Options {
            map: MapMode::Auto,
            staging: StoreStaging::Auto,
            scratch: None,
            force: false,
            verify: true,
            no_userns: false,
            reproducible: None,
        },
    };
    let image = build(&request)?;

    // A disk holding an ESP and the same tree, as ext4, in its root partition.
    let disk_spec = DiskSpec::from_json_str(
        &format!(
            r#"{{"table": "gpt", "partitions": [
                 {{"name": "esp", "type": "esp", "size": "auto", "content": {{"fat": {{"dir": {:?}}}}}}},
                 {{"name": "root", "type": "linux", "content": {{"build": {{"filesystem": "ext4",
                   "label": "root", "rootfs": {:?}}}}}}}]}}"#,
            esp, tree
        ),
        "embed.rs",
    )?;
    let disk_opts = disk::Options {
        force: false,
        bmap: None,
        compress: None,
        map: MapMode::Auto,
        reproducible: None,
    };
    let disk = disk::make(&disk_spec, &out.join("disk.img"), &disk_opts)?;

    let both = serde_json::json!({ "image": image, "disk": disk });
    println!("{}", serde_json::to_string_pretty(&both)?);
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    fs::write(path, text)?;
    Ok(())
}
