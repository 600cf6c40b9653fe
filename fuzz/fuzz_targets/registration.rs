//! `parse_registration` must return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootbox_images::closure::parse_registration;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(records) = parse_registration(text) {
            for r in &records {
                assert!(r.path.is_absolute(), "{r:?}");
            }
        }
    }
});
