//! `Spec::from_json_str` must return an error, never panic; a spec it
//! accepts must survive a round trip through its own JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootbox_images::spec::Spec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = Spec::from_json_str(text, "fuzz.json") {
        let json = serde_json::to_string(&spec).expect("a parsed spec serializes");
        let again = Spec::from_json_str(&json, "round-trip.json")
            .unwrap_or_else(|e| panic!("{json}: its own JSON does not parse: {e}"));
        assert_eq!(spec, again, "{json}");
    }
});
