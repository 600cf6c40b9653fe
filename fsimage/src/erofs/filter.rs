//! The xattr name filter (`h_name_filter`, erofs-utils 1.7 and later): a
//! 32-bit bloom filter in each inode's xattr header, one bit per name,
//! computed with xxHash32 (written here from its published specification).

use super::layout::XATTR_FILTER_SEED;

const P1: u32 = 0x9E37_79B1;
const P2: u32 = 0x85EB_CA77;
const P3: u32 = 0xC2B2_AE3D;
const P4: u32 = 0x27D4_EB2F;
const P5: u32 = 0x1656_67B1;

/// xxHash32 of `data` with `seed`.
pub(crate) fn xxh32(data: &[u8], seed: u32) -> u32 {
    let lane = |acc: u32, b: &[u8]| {
        let x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        acc.wrapping_add(x.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let mut rest = data;
    let mut h = if data.len() >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 16 {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = lane(*acc, &rest[i * 4..]);
            }
            rest = &rest[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u32);
    while rest.len() >= 4 {
        let x = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        h = h
            .wrapping_add(x.wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
        rest = &rest[4..];
    }
    for &b in rest {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

/// The `h_name_filter` of an inode whose xattrs are `names` (name index,
/// suffix): every bit set but one per name.
pub(crate) fn name_filter<'a>(names: impl IntoIterator<Item = (u8, &'a [u8])>) -> u32 {
    let present = names.into_iter().fold(0u32, |acc, (index, suffix)| {
        acc | 1 << (xxh32(suffix, XATTR_FILTER_SEED.wrapping_add(u32::from(index))) % 32)
    });
    !present
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_gives_the_reference_values() {
        // The values xxHash's own test vectors and `xxh32sum` give.
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxh32(b"abc", 0), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xE229_3B2F
        );
    }
}
