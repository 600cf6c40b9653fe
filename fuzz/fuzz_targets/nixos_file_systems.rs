//! `from_nixos_file_systems` must return an error, never panic, whatever
//! the JSON and whichever device the image is said to be.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootbox_images::layout::Layout;
use rootbox_images::nixos::{from_nixos_file_systems, ImageDevice};

fuzz_target!(|data: &[u8]| {
    // First byte: which image device to assume.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let dev = match sel % 4 {
        0 => ImageDevice::default(),
        1 => ImageDevice {
            label: Some("nixos".into()),
            ..Default::default()
        },
        2 => ImageDevice {
            uuid: Some("44444444-4444-4444-8888-888888888888".into()),
            ..Default::default()
        },
        _ => ImageDevice {
            device: Some("/dev/vda".into()),
            ..Default::default()
        },
    };
    if let Ok(l) = from_nixos_file_systems(text, &dev) {
        // What it returns is documented as already checked.
        Layout::new(&l.subvolumes)
            .expect("from_nixos_file_systems returned a layout Layout::new refuses");
    }
});
