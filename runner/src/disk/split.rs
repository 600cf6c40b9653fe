//! After a disk: systemd-repart's `--split` artifacts, each partition's
//! bytes copied out of the published disk into `IMAGE.NAME.raw` beside it
//! (`IMAGE` without its `.raw`), `NAME` the partition's `SplitName=`; for
//! systemd-sysupdate, which installs partitions, not disks. Zero blocks
//! stay holes. Written under a temporary name and renamed, so a failed
//! split leaves no partial artifact.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::report::PartitionReport;

/// The block zero runs are skipped in.
const BLOCK: usize = 4096;

/// Writes the split artifact of every partition that has a name; returns
/// each one's path (None: no artifact), in partition order.
pub fn write(
    image: &Path,
    parts: &[PartitionReport],
    names: &[Option<String>],
) -> Result<Vec<Option<PathBuf>>> {
    let mut disk =
        File::open(image).with_context(|| format!("opening {} to split it", image.display()))?;
    let base = image.to_string_lossy();
    let base = base.strip_suffix(".raw").unwrap_or(&base);
    let mut out = Vec::new();
    for (p, name) in parts.iter().zip(names) {
        let Some(name) = name else {
            out.push(None);
            continue;
        };
        let path = PathBuf::from(format!("{base}.{name}.raw"));
        copy_range(&mut disk, p.offset_bytes, p.size_bytes, &path)
            .with_context(|| format!("writing the split artifact {}", path.display()))?;
        out.push(Some(path));
    }
    Ok(out)
}

/// `len` bytes of `disk` from `offset` into `to`, sparse.
fn copy_range(disk: &mut File, offset: u64, len: u64, to: &Path) -> Result<()> {
    let tmp = to.with_extension("raw.part");
    let result = (|| -> Result<()> {
        let mut f = File::create(&tmp)?;
        disk.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; 256 * BLOCK];
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            disk.read_exact(&mut buf[..n])?;
            for chunk in buf[..n].chunks(BLOCK) {
                if chunk.iter().all(|&b| b == 0) {
                    f.seek(SeekFrom::Current(chunk.len() as i64))?;
                } else {
                    f.write_all(chunk)?;
                }
            }
            done += n as u64;
        }
        f.set_len(len)?;
        f.sync_all()?;
        fs::rename(&tmp, to)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
