//! squashfs metadata: blocks of at most 8 KiB, each behind a 2-byte
//! header (its length, and a bit for "stored uncompressed"), read through
//! a cursor that runs on into the next block; and the decompressors.

use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use zerocopy::little_endian::U16;
use zerocopy::FromBytes;

use super::layout::{METADATA_SIZE, METADATA_UNCOMPRESSED};
use crate::source::{bytes, get, Source};
use crate::Error;

/// How the image's blocks are compressed (`compression` in the
/// superblock). Which of them this reader decompresses is
/// [`Compressor::decompress`]'s business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compressor(pub u16);

impl Compressor {
    /// mksquashfs's name for it.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "gzip",
            2 => "lzma",
            3 => "lzo",
            4 => "xz",
            5 => "lz4",
            6 => "zstd",
            _ => "unknown",
        }
    }

    /// The bytes `raw` stand for, at most `max` of them; gzip, xz, lz4
    /// and zstd (lzo and the old lzma are [`Error::Compressor`]).
    pub fn decompress(self, raw: &[u8], max: usize, offset: u64) -> Result<Vec<u8>, Error> {
        let failed = |source| Error::Decompress {
            compressor: self.name(),
            offset,
            source,
        };
        let mut out = Vec::new();
        match self.0 {
            1 => {
                flate2::read::ZlibDecoder::new(raw)
                    .take(max as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(failed)?;
            }
            4 => {
                let mut w = Limited(&mut out, max);
                lzma_rs::xz_decompress(&mut std::io::BufReader::new(raw), &mut w)
                    .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
            }
            5 => {
                out = lz4_flex::block::decompress(raw, max)
                    .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
            }
            6 => {
                zstd::stream::read::Decoder::new(raw)
                    .map_err(failed)?
                    .take(max as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(failed)?;
            }
            _ => {
                return Err(Error::Compressor {
                    name: self.name(),
                    id: self.0,
                })
            }
        }
        if out.len() > max {
            return Err(failed(std::io::Error::other(format!(
                "more than the {max} bytes a block holds"
            ))));
        }
        Ok(out)
    }
}

/// A writer that refuses to grow past a limit.
struct Limited<'a>(&'a mut Vec<u8>, usize);

impl std::io::Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > self.1 {
            return Err(std::io::Error::other("output past the block size"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One metadata block, uncompressed, and where the next one starts.
struct Block {
    data: Vec<u8>,
    next: u64,
}

/// Reads metadata blocks, each decompressed once.
pub(crate) struct Meta<'s, S: Source + ?Sized> {
    pub src: &'s S,
    pub comp: Compressor,
    cache: HashMap<u64, Rc<Block>>,
}

/// A position in metadata: the block's byte offset in the image and the
/// offset in its uncompressed bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pub block: u64,
    pub offset: usize,
}

impl<'s, S: Source + ?Sized> Meta<'s, S> {
    pub fn new(src: &'s S, comp: Compressor) -> Self {
        Meta {
            src,
            comp,
            cache: HashMap::new(),
        }
    }

    /// The metadata block at byte `at` of the image.
    fn block(&mut self, at: u64) -> Result<Rc<Block>, Error> {
        if let Some(b) = self.cache.get(&at) {
            return Ok(b.clone());
        }
        let h: U16 = get(self.src, at, "squashfs metadata block header")?;
        let len = h.get() & !METADATA_UNCOMPRESSED;
        if len == 0 || usize::from(len) > METADATA_SIZE {
            return Err(Error::MetadataBlock { offset: at, len });
        }
        let raw = bytes(
            self.src,
            at + 2,
            usize::from(len),
            "squashfs metadata block",
        )?;
        let data = if h.get() & METADATA_UNCOMPRESSED != 0 {
            raw
        } else {
            self.comp.decompress(&raw, METADATA_SIZE, at)?
        };
        let b = Rc::new(Block {
            data,
            next: at + 2 + u64::from(len),
        });
        self.cache.insert(at, b.clone());
        Ok(b)
    }

    /// `n` bytes at `cur`, running on into the following blocks; `cur`
    /// moves past them.
    pub fn read(&mut self, cur: &mut Cursor, n: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(n.min(METADATA_SIZE));
        while out.len() < n {
            let b = self.block(cur.block)?;
            if cur.offset >= b.data.len() {
                if cur.offset > b.data.len() {
                    return Err(Error::MetadataRef {
                        block: cur.block,
                        offset: cur.offset,
                    });
                }
                *cur = Cursor {
                    block: b.next,
                    offset: 0,
                };
                continue;
            }
            let take = (n - out.len()).min(b.data.len() - cur.offset);
            out.extend_from_slice(&b.data[cur.offset..cur.offset + take]);
            cur.offset += take;
        }
        Ok(out)
    }

    /// The structure `T` at `cur`.
    pub fn get<T: FromBytes>(&mut self, cur: &mut Cursor) -> Result<T, Error> {
        let b = self.read(cur, size_of::<T>())?;
        Ok(T::read_from_bytes(&b).expect("the size of T was read"))
    }
}
