//! The erofs reader and writer on mutated images: `erofs::read_bytes`
//! must return `Ok` or an error, never panic; an image it reads is
//! patched (`erofs::apply`: owners, xattr order, a FIFO made a device
//! node, a `user.capability` made `security.capability`) and read again,
//! which must not panic either.
//!
//! Seeds: `fuzz/corpus/erofs_image/`, real mkfs.erofs images written by
//! `ROOTBOX_WRITE_FUZZ_SEEDS=fuzz/corpus/erofs_image cargo test -p
//! rootbox-fsimage --test erofs_mutations` (the deterministic mutation
//! loop CI runs without cargo-fuzz).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rootbox_fsimage::erofs::{self, At, Device, DeviceKind, Patch, XattrOrder};

/// One scratch file per fuzzing process, rewritten for every input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("rootbox-fuzz-erofs-{}.img", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = erofs::read_bytes(data) else {
        return;
    };
    let path = scratch();
    std::fs::write(path, data).expect("writing the scratch image");
    let patches: Vec<Patch> = entries
        .iter()
        .take(4)
        .map(|e| Patch {
            at: At::Path(e.path.clone()),
            uid: Some(1),
            gid: Some(70_000),
            mode: Some(e.mode),
            device: (e.mode & 0o170000 == 0o010000).then_some(Device {
                kind: DeviceKind::Char,
                major: 1,
                minor: 3,
            }),
            user_to_security: e
                .xattrs
                .as_ref()
                .is_some_and(|x| x.contains_key(&b"user.capability"[..]))
                .then(|| b"capability".to_vec()),
        })
        .collect();
    let _ = erofs::apply(path, &patches, XattrOrder::ByName);
    let _ = erofs::read(path);
});
