//! The two checksums a disk needs: CRC-32 (IEEE 802.3, reflected, as the
//! GPT header and entry array carry it; the `crc32fast` crate) and
//! SHA-256 (bmaptool's block map, GUIDs derived from a seed; the `sha2`
//! crate).

/// CRC-32 as UEFI computes it for GPT headers and entry arrays (IEEE
/// 802.3: poly 0xEDB88320 reflected, initial value and final xor
/// 0xFFFFFFFF), by the `crc32fast` crate.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// SHA-256 (the `sha2` crate, as the btrfs crate's derived UUIDs use it);
/// [`Digest`] brings its `new`/`update`/`finalize`.
pub use sha2::{Digest, Sha256};

/// SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    hex(&h.finalize())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn sha256_matches_the_fips_examples() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Fed in odd pieces, the same as in one.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut h = Sha256::new();
        for c in data.chunks(37) {
            h.update(c);
        }
        assert_eq!(hex(&h.finalize()), sha256_hex(&data));
    }
}
