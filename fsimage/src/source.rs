//! Where a reader's bytes come from: an image file or a slice (tests and
//! the fuzzer), read at offsets with a typed error for a short image.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use zerocopy::FromBytes;

use crate::Error;

/// Opens an image file for a reader: the file, and its size, read once
/// (every structure read is checked against it).
pub(crate) fn open(image: &std::path::Path) -> Result<(File, u64), Error> {
    let file = File::open(image).map_err(|source| Error::Open {
        path: image.to_path_buf(),
        source,
    })?;
    let len = file.metadata().map_err(|source| Error::Io {
        what: "image size",
        offset: 0,
        source,
    })?;
    Ok((file, len.len()))
}

/// Bytes readable at an offset.
pub(crate) trait Source {
    /// Fills `buf` from `offset`; an image too short gives `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Bytes in the image.
    fn size(&self) -> io::Result<u64>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl Source for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// `len` bytes of a file from `offset` on: a filesystem inside a disk
/// image, read where it lies.
pub(crate) struct Window<'f> {
    /// The file.
    pub file: &'f File,
    /// Where the filesystem starts in it.
    pub offset: u64,
    /// The filesystem's length.
    pub len: u64,
}

impl Source for Window<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let at = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .and_then(|_| self.offset.checked_add(offset))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        FileExt::read_exact_at(self.file, buf, at)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// Reads `len` bytes of `what` at `offset`.
pub(crate) fn bytes<S: Source + ?Sized>(
    src: &S,
    offset: u64,
    len: usize,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        what,
        offset,
        source,
    };
    // Checked before allocating, so a corrupt length costs no memory.
    let size = src.size().map_err(io)?;
    if offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(Error::Truncated { what, offset, len });
    }
    let mut b = vec![0u8; len];
    src.read_exact_at(&mut b, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Truncated { what, offset, len }
        } else {
            io(e)
        }
    })?;
    Ok(b)
}

/// Reads the structure `T` (`what`) at `offset`.
pub(crate) fn get<T: FromBytes, S: Source + ?Sized>(
    src: &S,
    offset: u64,
    what: &'static str,
) -> Result<T, Error> {
    let b = bytes(src, offset, size_of::<T>(), what)?;
    Ok(T::read_from_bytes(&b).expect("the size of T was read"))
}
