//! Ids the namespace does not map, as both sides of the pipeline treat
//! them: what they read as (the overflow ids), set-id bits that must not
//! become root's, and POSIX ACL entries that name them.

/// The kernel's overflow uid and gid (`/proc/sys/kernel/overflow{u,g}id`,
/// 65534 unless changed): what an owner the namespace does not map reads as
/// inside it.
pub fn overflow_ids() -> (u32, u32) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534)
    };
    (
        read("/proc/sys/kernel/overflowuid"),
        read("/proc/sys/kernel/overflowgid"),
    )
}

/// `mode` without its set-id bits where the owner or group was replaced:
/// one rule for every filesystem, kept in the image model.
pub use rootbox_images::fs::strip_setid;

/// POSIX ACL xattr names (whose values carry uids and gids).
pub const ACL_NAMES: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// Rewrites the ids of a POSIX ACL xattr value with `map`; entries whose
/// id does not map are dropped. Returns the new value and how many entries
/// were dropped, or None when the value is malformed.
pub fn translate_acl(
    value: &[u8],
    map_uid: impl Fn(u32) -> Option<u32>,
    map_gid: impl Fn(u32) -> Option<u32>,
) -> Option<(Vec<u8>, usize)> {
    // A 4-byte header, then 8-byte entries.
    if value.len() < 4 || value.len() % 8 != 4 {
        return None;
    }
    let mut out = value[..4].to_vec();
    let mut dropped = 0;
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let mapped = match tag {
            ACL_USER => map_uid(id),
            ACL_GROUP => map_gid(id),
            _ => Some(id),
        };
        match mapped {
            Some(new) => {
                out.extend_from_slice(&e[..4]);
                out.extend_from_slice(&new.to_le_bytes());
            }
            None => dropped += 1,
        }
    }
    Some((out, dropped))
}

/// Inside the namespace an ACL id that does not map reads as 0xffffffff:
/// [`translate_acl`] with this for both maps drops exactly those entries.
pub fn keep_mapped(id: u32) -> Option<u32> {
    (id != u32::MAX).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn acl_ids_are_mapped_or_dropped() {
        let value = acl(&[
            (0x01, 7, u32::MAX),
            (ACL_USER, 5, 1000),
            (0x04, 5, u32::MAX),
            (ACL_GROUP, 5, 4),
            (0x10, 7, u32::MAX),
            (0x20, 5, u32::MAX),
        ]);
        let (out, dropped) = translate_acl(&value, |u| (u == 1000).then_some(0), |_| None).unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(
            out,
            acl(&[
                (0x01, 7, u32::MAX),
                (ACL_USER, 5, 0),
                (0x04, 5, u32::MAX),
                (0x10, 7, u32::MAX),
                (0x20, 5, u32::MAX)
            ])
        );
        assert!(translate_acl(&[1, 2, 3], Some, Some).is_none());
    }
}
