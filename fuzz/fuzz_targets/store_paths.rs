//! `parse_store_paths` must return an error, never panic; every path it
//! accepts is a direct child of the store directory, listed once.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rootbox_images::closure::parse_store_paths;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let store = match sel % 3 {
        0 => Path::new("/nix/store"),
        1 => Path::new("/nix/store/"),
        _ => Path::new("/"),
    };
    if let Ok(paths) = parse_store_paths(text, store) {
        let mut seen = HashSet::new();
        for p in &paths {
            assert!(seen.insert(p.clone()), "{p:?} accepted twice");
            assert!(p.is_absolute(), "{p:?}");
            assert!(p.file_name().is_some(), "{p:?} has no name");
        }
    }
});
