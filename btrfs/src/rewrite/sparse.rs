//! The data a sparse image file holds: the reproducible pass reads only
//! that when it looks for leftovers (mkfs writes a fresh file, so most of
//! an image's free space is holes, which read as zeros).

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// The runs of `start..end` (device offsets) where the image file may
/// hold data: the holes of a sparse file read as zeros and are left
/// out (`lseek` with `SEEK_DATA`, `SEEK_HOLE`). Where the file cannot
/// tell (a filesystem or kernel without them), the whole range.
pub(super) fn data_runs(file: &File, base: u64, start: u64, end: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    // A device offset as a file offset for lseek, and back.
    let at = |pos: u64| i64::try_from(base + pos).ok();
    let back = |off: i64| (off as u64).saturating_sub(base);
    let mut runs = Vec::new();
    let mut pos = start;
    while pos < end {
        let Some(off) = at(pos) else {
            return vec![(start, end)];
        };
        let data = match lseek(fd, off, Whence::SeekData) {
            Ok(d) => back(d).max(pos),
            // No data at or after `pos`.
            Err(Errno::ENXIO) => break,
            Err(_) => return vec![(start, end)],
        };
        if data >= end {
            break;
        }
        let Some(off) = at(data) else {
            return vec![(start, end)];
        };
        let hole = match lseek(fd, off, Whence::SeekHole) {
            Ok(h) => back(h).clamp(data + 1, end),
            Err(_) => return vec![(start, end)],
        };
        runs.push((data, hole));
        pos = hole;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_runs_cover_every_written_byte_and_skip_the_holes() {
        let f = tempfile::tempfile().unwrap();
        let mib = 1u64 << 20;
        f.set_len(8 * mib).unwrap();
        let written = [(mib, 4096u64), (5 * mib + 8192, 100)];
        for (at, len) in written {
            f.write_all_at(&vec![0xa5; len as usize], at).unwrap();
        }
        // Device offsets, the filesystem starting 1 MiB into the file.
        let base = mib;
        let runs = data_runs(&f, base, 0, 7 * mib);
        for (at, len) in written {
            let (s, e) = (at - base, at - base + len);
            assert!(
                runs.iter().any(|&(a, b)| a <= s && e <= b),
                "{s}..{e} not in {runs:?}"
            );
        }
        assert!(runs.windows(2).all(|w| w[0].1 <= w[1].0), "{runs:?}");
        let read: u64 = runs.iter().map(|(a, b)| b - a).sum();
        assert!(read < 2 * mib, "the holes were read too: {runs:?}");
        // A range of holes only, and one cut inside the data.
        assert_eq!(data_runs(&f, base, mib, 4 * mib), vec![]);
        assert_eq!(data_runs(&f, base, 100, 200), vec![(100, 200)]);
    }
}
