//! Copying a file's data into the disk at an offset without filling its
//! holes: the source's data ranges (SEEK_DATA/SEEK_HOLE) go over with
//! copy_file_range(2), which btrfs and XFS turn into a shared extent
//! (reflink) when the ranges line up with their blocks, and every other
//! filesystem into an in-kernel copy. Holes stay holes, so the disk stays
//! sparse. [`extract`] copies a partition out of a disk the same way.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// The data ranges `(offset, length)` of `file`'s first `len` bytes.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let data = match lseek(file.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => break,
            // No SEEK_DATA here: all of it is data.
            Err(Errno::EINVAL) if pos == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let hole = match lseek(file.as_raw_fd(), data as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(len),
            Err(Errno::ENXIO) => len,
            Err(e) => return Err(e.into()),
        };
        ranges.push((data, hole - data));
        pos = hole;
    }
    Ok(ranges)
}

/// Copies the data of `src` (its first `len` bytes) to `dst` at `at`.
/// Returns the bytes copied (the holes are not).
pub fn splice(src: &File, len: u64, dst: &File, at: u64) -> io::Result<u64> {
    let mut copied = 0;
    for (off, n) in data_ranges(src, len)? {
        copy_range(src, off, dst, at + off, n)?;
        copied += n;
    }
    Ok(copied)
}

/// Copies the data of `src` in `at..at + len` to `dst` at 0 (a partition
/// out of a disk), holes left as holes. Returns the bytes copied.
pub fn extract(src: &File, at: u64, len: u64, dst: &File) -> io::Result<u64> {
    let mut copied = 0;
    for (off, n) in data_ranges(src, at + len)? {
        let (from, to) = (off.max(at), (off + n).min(at + len));
        if from < to {
            copy_range(src, from, dst, from - at, to - from)?;
            copied += to - from;
        }
    }
    Ok(copied)
}

/// copy_file_range(2) of `n` bytes, falling back to read and write where
/// the kernel refuses it (EXDEV before 5.3, some filesystems' EINVAL).
fn copy_range(src: &File, mut from: u64, dst: &File, mut to: u64, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let mut f = from as i64;
        let mut t = to as i64;
        let chunk = n.min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut f),
            dst.as_fd(),
            Some(&mut t),
            chunk,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the source ended at byte {from}, before the {n} bytes left to copy"),
                ))
            }
            Ok(c) => {
                from += c as u64;
                to += c as u64;
                n -= c as u64;
            }
            Err(Errno::EXDEV | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                return copy_by_reading(src, from, dst, to, n)
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_by_reading(
    src: &File,
    mut from: u64,
    dst: &File,
    mut to: u64,
    mut n: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while n > 0 {
        let c = (n as usize).min(buf.len());
        src.read_exact_at(&mut buf[..c], from)?;
        dst.write_all_at(&buf[..c], to)?;
        from += c as u64;
        to += c as u64;
        n -= c as u64;
    }
    Ok(())
}

/// Bytes of `file` (of `len`) that are data, not holes.
pub fn mapped_bytes(file: &File, len: u64) -> io::Result<u64> {
    Ok(data_ranges(file, len)?.iter().map(|(_, n)| n).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_stay_holes_and_data_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("s"))
            .unwrap();
        src.set_len(8 << 20).unwrap();
        src.write_all_at(b"start", 0).unwrap();
        src.write_all_at(&[7u8; 4096], 4 << 20).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("d"))
            .unwrap();
        dst.set_len(16 << 20).unwrap();
        let copied = splice(&src, 8 << 20, &dst, 1 << 20).unwrap();
        assert!(copied < 2 << 20, "holes were copied: {copied}");
        let mut b = [0u8; 5];
        dst.read_exact_at(&mut b, 1 << 20).unwrap();
        assert_eq!(&b, b"start");
        let mut b = [0u8; 4096];
        dst.read_exact_at(&mut b, 5 << 20).unwrap();
        assert_eq!(b, [7u8; 4096]);
        assert!(mapped_bytes(&dst, 16 << 20).unwrap() < 2 << 20);
    }

    #[test]
    fn a_partition_comes_out_with_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(n))
                .unwrap()
        };
        let disk = open("disk");
        disk.set_len(16 << 20).unwrap();
        disk.write_all_at(b"before", (1 << 20) - 6).unwrap();
        disk.write_all_at(b"first", 1 << 20).unwrap();
        disk.write_all_at(&[9u8; 4096], 6 << 20).unwrap();
        disk.write_all_at(b"after", 9 << 20).unwrap();
        let part = open("part");
        part.set_len(8 << 20).unwrap();
        let copied = extract(&disk, 1 << 20, 8 << 20, &part).unwrap();
        assert!(copied < 1 << 20, "holes were copied: {copied}");
        let mut b = [0u8; 5];
        part.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"first");
        let mut b = [0u8; 4096];
        part.read_exact_at(&mut b, 5 << 20).unwrap();
        assert_eq!(b, [9u8; 4096]);
        assert!(mapped_bytes(&part, 8 << 20).unwrap() < 1 << 20);
    }
}
