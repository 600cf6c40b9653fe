//! What a FAT filesystem can hold: names (long file names, VFAT rules),
//! labels, and how big a filesystem a set of files needs.

/// Characters VFAT refuses in a long file name.
const FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// Why a name cannot be a FAT file name, or None when it can.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("is not a file name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| FORBIDDEN.contains(c) || (*c as u32) < 0x20)
    {
        return Some(format!("contains {c:?}, which FAT cannot hold"));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some("ends with a dot or a space, which FAT drops".into());
    }
    if name.encode_utf16().count() > 255 {
        return Some("is longer than FAT's 255 UTF-16 units".into());
    }
    None
}

/// The FAT volume label rules: at most 11 bytes of printable ASCII
/// without the characters VFAT forbids; stored upper-case.
pub fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() || label.len() > 11 {
        return Some(format!(
            "the FAT label {label:?} must be 1 to 11 characters"
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !c.is_ascii_graphic() && *c != ' ' || FORBIDDEN.contains(c) || *c == '.')
    {
        return Some(format!(
            "the FAT label {label:?} contains {c:?}: use A-Z, 0-9, space, - or _"
        ));
    }
    None
}

/// A generous size for a FAT filesystem holding `files` of these sizes
/// and `dirs` directories: every file and directory rounded up to a 4 KiB
/// cluster (directories of many entries grow by more), two FATs, reserved
/// sectors, and 1/16 slack; at least 1 MiB. The runner grows it and tries
/// again if mcopy still finds the filesystem full.
pub fn estimate_size(file_sizes: &[u64], dirs: u64) -> u64 {
    const CLUSTER: u64 = 4096;
    let clusters: u64 = file_sizes
        .iter()
        .map(|s| s.div_ceil(CLUSTER).max(1))
        .sum::<u64>()
        + dirs * 2
        + (file_sizes.len() as u64 * 64).div_ceil(CLUSTER);
    let data = clusters * CLUSTER;
    // FAT32 entries are 4 bytes per cluster, two copies; 64 KiB reserved.
    let fats = 2 * clusters * 4 + 2 * 64 * 1024;
    let total = data + fats + data / 16 + 512 * 1024;
    total.max(1 << 20).div_ceil(1 << 20) * (1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_names_refuse_what_vfat_cannot_store() {
        assert_eq!(name_problem("config.txt"), None);
        assert_eq!(name_problem("Image ünï long name.dtb"), None);
        for bad in ["a:b", "what?", "x\\y", "tab\tname", "trailing.", "", ".."] {
            assert!(name_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(name_problem(&"a".repeat(256)).is_some());
    }

    #[test]
    fn labels_are_short_ascii() {
        assert_eq!(label_problem("FIRMWARE"), None);
        assert!(label_problem("FIRMWARE_LONG").is_some());
        assert!(label_problem("fé").is_some());
    }

    #[test]
    fn the_estimate_covers_the_clusters() {
        let s = estimate_size(&[1; 1000], 10);
        assert!(s >= 1000 * 4096, "{s}");
        assert_eq!(estimate_size(&[], 0), 1 << 20);
    }
}
