//! `rootbox build --example`: a small demo rootfs and a fake closure, built
//! into an impermanence-style image (`@nix`, `@persist`, `@home`, no `/`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rootbox_images::spec::{Spec, SubvolumeSpec};

/// The example's files; removed when dropped.
pub struct Example {
    _dir: crate::output::Held,
    pub spec: Spec,
}

fn write(p: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// Writes the example's rootfs and fake closure into a temporary
/// directory, and the spec that builds them.
pub fn make() -> Result<Example> {
    let dir = crate::output::temp_dir("rootbox-example-")?;
    let root = dir.path().join("root");
    write_rootfs(&root)?;
    let store = dir.path().join("nix/store");
    let info = dir.path().join("closure-info");
    write_closure(&store, &info)?;
    let spec = spec(root, info, store);
    Ok(Example { _dir: dir, spec })
}

/// The demo rootfs: persistent state as an impermanence setup keeps it, a
/// home, a setuid binary, a file with a capability, links, and a file
/// outside every subvolume.
fn write_rootfs(root: &Path) -> Result<()> {
    // The persistent state, as an impermanence setup keeps it.
    write(
        &root.join("persist/etc/ssh/sshd_config"),
        "PermitRootLogin prohibit-password\nStrictModes yes\n",
        0o644,
    )?;
    write(
        &root.join("persist/etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
        0o444,
    )?;
    write(
        &root.join("persist/root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyForRootboxDemoOnly demo\n",
        0o600,
    )?;
    mode(&root.join("persist/root/.ssh"), 0o700)?;
    mode(&root.join("persist/root"), 0o700)?;
    write(
        &root.join("home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyForAliceDemoOnly alice\n",
        0o600,
    )?;
    mode(&root.join("home/alice/.ssh"), 0o700)?;
    write(
        &root.join("home/alice/notes.txt"),
        "hello from alice's home\n",
        0o644,
    )?;
    fs::create_dir_all(root.join("persist/var/tmp"))?;
    mode(&root.join("persist/var/tmp"), 0o1777)?;
    // A setuid binary and a file with a capability, both kept as they are.
    write(
        &root.join("persist/usr/bin/demo-setuid"),
        "#!/bin/sh\necho setuid demo\n",
        0o4755,
    )?;
    write(
        &root.join("persist/usr/bin/demo-cap"),
        "#!/bin/sh\necho cap demo\n",
        0o755,
    )?;
    // security.capability v2 for cap_net_bind_service (bit 10), effective.
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 10, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    set_capability(&root.join("persist/usr/bin/demo-cap"), &cap);
    std::os::unix::fs::symlink("demo-setuid", root.join("persist/usr/bin/demo-link"))?;
    fs::hard_link(
        root.join("persist/usr/bin/demo-cap"),
        root.join("persist/usr/bin/demo-cap-hardlink"),
    )?;
    // Outside every subvolume: not in the image, and reported.
    write(&root.join("etc/hostname"), "rootbox-demo\n", 0o644)?;
    Ok(())
}

/// A fake closure: three store paths under `store`, and their
/// `store-paths` and `registration` in `info`.
fn write_closure(store: &Path, info: &Path) -> Result<()> {
    let names = [
        "0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-hello-2.12",
        "1q2r3s4t5u6v7w8x9y0z1a2b3c4d5e6f-glibc-2.40",
        "2g3h4i5j6k7l8m9n0p1q2r3s4t5u6v7w-demo-config",
    ];
    write(
        &store.join(names[0]).join("bin/hello"),
        "#!/bin/sh\necho hello\n",
        0o555,
    )?;
    write(
        &store.join(names[1]).join("lib/libc.so.6"),
        &"\x7fELF demo library\n".repeat(64),
        0o444,
    )?;
    write(&store.join(names[2]), "config = demo\n", 0o444)?;
    fs::create_dir_all(info)?;
    let paths: Vec<String> = names
        .iter()
        .map(|n| store.join(n).display().to_string())
        .collect();
    fs::write(info.join("store-paths"), paths.join("\n") + "\n")?;
    let mut reg = String::new();
    for (i, p) in paths.iter().enumerate() {
        let refs: Vec<&String> = if i == 0 {
            vec![&paths[0], &paths[1]]
        } else {
            vec![p]
        };
        reg += &format!(
            "{p}\nsha256:{}\n{}\n\n{}\n",
            "0".repeat(52),
            1000 + i,
            refs.len()
        );
        for r in refs {
            reg += &format!("{r}\n");
        }
    }
    fs::write(info.join("registration"), reg)?;
    Ok(())
}

/// The example's spec: the rootfs and closure into `@nix`, `@persist` and
/// `@home`, no subvolume at `/`.
fn spec(root: PathBuf, info: PathBuf, store: PathBuf) -> Spec {
    let subvol = |name: &str, mp: &str| SubvolumeSpec {
        name: name.into(),
        mountpoint: mp.into(),
        kind: Default::default(),
        inode_flags: Vec::new(),
    };
    Spec {
        label: Some("rootbox-demo".into()),
        rootfs: Some(root),
        closure: Some(info),
        store_dir: store,
        subvolumes: vec![
            subvol("@nix", "/nix"),
            subvol("@persist", "/persist"),
            subvol("@home", "/home"),
        ],
        ..Spec::default()
    }
}

/// Sets a file capability. Unprivileged, that takes a user namespace in
/// which we are root (the kernel then records the namespace's root as the
/// capability's owner, and a build under the same mapping reads it back
/// as an ordinary capability).
fn set_capability(path: &Path, value: &[u8]) {
    if xattr::set(path, "security.capability", value).is_ok() {
        return;
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let status = rootbox_sandbox::Sandbox::new()
        .map_root()
        .command([
            std::ffi::OsString::from("setfattr"),
            "-n".into(),
            "security.capability".into(),
            "-v".into(),
            format!("0x{hex}").into(),
            path.into(),
        ])
        .run();
    if !matches!(status, Ok(s) if s.success()) {
        tracing::info!("example: could not set a file capability on {} (setfattr from the attr package is needed); it is left out", path.display());
    }
}
