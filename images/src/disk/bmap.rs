//! bmaptool's block map (`.bmap`, format 2.0): which blocks of an image
//! hold data, each range with its SHA-256, so `bmaptool copy` writes only
//! those and checks them.
//!
//! The fields are the ones bmaptool's `BmapCreate` writes: `ImageSize`,
//! `BlockSize`, `BlocksCount` (= ceil(ImageSize / BlockSize)),
//! `MappedBlocksCount`, `ChecksumType` (sha256), `BmapFileChecksum` (the
//! SHA-256 of the file with this field's value written as 64 `0`s), and a
//! `BlockMap` of `<Range chksum="…">first-last</Range>` (inclusive block
//! numbers; the last block may run past the end of the image, and its
//! checksum covers only the bytes that exist).

use super::hash::sha256_hex;

/// One mapped range: first and last block (inclusive) and the SHA-256 of
/// its bytes, in hex.
pub struct Range {
    /// First block of the range.
    pub first: u64,
    /// Last block of the range (inclusive).
    pub last: u64,
    /// SHA-256 of the range's bytes, lowercase hex.
    pub sha256: String,
}

/// The data ranges `(offset, length)` of a file, as block ranges of
/// `block` bytes (merged where they touch).
pub fn block_ranges(data: &[(u64, u64)], block: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in data.iter().filter(|r| r.1 > 0) {
        let (first, last) = (off / block, (off + len - 1) / block);
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// The .bmap text.
pub fn render(image_size: u64, block: u64, ranges: &[Range]) -> String {
    let blocks = image_size.div_ceil(block);
    let mapped: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    let percent = if blocks == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / blocks as f64
    };
    let mut map = String::new();
    for r in ranges {
        let span = if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}-{}", r.first, r.last)
        };
        map.push_str(&format!(
            "        <Range chksum=\"{}\"> {span} </Range>\n",
            r.sha256
        ));
    }
    let text = |checksum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- The block map of an image: the blocks holding data, each range with\n     \
             its SHA-256. Written by rootbox; read by bmaptool copy. -->\n\
             <bmap version=\"2.0\">\n    \
             <!-- Image size in bytes -->\n    \
             <ImageSize> {image_size} </ImageSize>\n    \
             <!-- Size of a block in bytes -->\n    \
             <BlockSize> {block} </BlockSize>\n    \
             <!-- Count of blocks in the image file -->\n    \
             <BlocksCount> {blocks} </BlocksCount>\n    \
             <!-- Count of mapped blocks: {percent:.1}% -->\n    \
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n    \
             <!-- Type of checksum used in this file -->\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <!-- The SHA-256 of this file with this value written as 64 zeros -->\n    \
             <BmapFileChecksum> {checksum} </BmapFileChecksum>\n    \
             <!-- The mapped block ranges (inclusive) -->\n    \
             <BlockMap>\n{map}    </BlockMap>\n\
             </bmap>\n"
        )
    };
    let zeroed = text(&"0".repeat(64));
    text(&sha256_hex(zeroed.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_round_to_blocks() {
        assert_eq!(
            block_ranges(&[(0, 1), (4095, 2), (10000, 5000)], 4096),
            vec![(0, 3)]
        );
        assert_eq!(
            block_ranges(&[(0, 1), (3 * 4096, 1)], 4096),
            vec![(0, 0), (3, 3)]
        );
        assert_eq!(
            block_ranges(&[(0, 4096), (8192, 1)], 4096),
            vec![(0, 0), (2, 2)]
        );
    }

    #[test]
    fn the_file_checksum_is_of_the_zeroed_text() {
        let t = render(
            10_000,
            4096,
            &[Range {
                first: 0,
                last: 2,
                sha256: "ab".repeat(32),
            }],
        );
        assert!(t.contains("<BlocksCount> 3 </BlocksCount>"));
        assert!(t.contains("<MappedBlocksCount> 3 </MappedBlocksCount>"));
        let sum = t.split("<BmapFileChecksum> ").nth(1).unwrap()[..64].to_string();
        assert_eq!(sha256_hex(t.replace(&sum, &"0".repeat(64)).as_bytes()), sum);
    }
}
