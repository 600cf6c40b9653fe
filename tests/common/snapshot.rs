//! A snapshot of a source tree ([`Snapshot::of`]): content, type, owner,
//! mode, mtime and ctime, xattrs, symlink targets and device numbers of
//! every entry (atime is left out: reading a file may update it), so that
//! a test can show that rootbox left its inputs as they were.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of a source tree, as rootbox must leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    depth: usize,
    name: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A hash of the content (regular files: the data regions and their
    /// offsets; symlinks: the target).
    content: u64,
}

/// The whole tree below a directory, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(pub Vec<Rec>);

impl Snapshot {
    /// Walks `root` without following symlinks. Works on trees deeper than
    /// PATH_MAX allows (each directory is reached through its parent's
    /// descriptor), in a thread with a big stack.
    pub fn of(root: &Path) -> Snapshot {
        raise_nofile_limit();
        let root = root.to_path_buf();
        std::thread::Builder::new()
            .stack_size(512 << 20)
            .spawn(move || {
                let mut out = Vec::new();
                let m = fs::symlink_metadata(&root).expect("lstat the source root");
                out.push(record(&root, b"", 0, &m));
                let dir = fs::File::open(&root).expect("open the source root");
                walk_fd(&dir, 1, &mut out);
                Snapshot(out)
            })
            .expect("spawning the snapshot thread")
            .join()
            .expect("the snapshot thread panicked")
    }

    /// The first difference, with the path of the entry.
    pub fn diff(&self, after: &Snapshot) -> Option<String> {
        let path_of = |recs: &[Rec], i: usize| {
            let mut parts = vec![String::from_utf8_lossy(&recs[i].name).into_owned()];
            let mut depth = recs[i].depth;
            for r in recs[..i].iter().rev() {
                if r.depth + 1 == depth {
                    parts.push(String::from_utf8_lossy(&r.name).into_owned());
                    depth = r.depth;
                }
            }
            parts.reverse();
            let p = parts.join("/");
            if p.len() > 200 {
                format!("…{}", &p[p.len() - 200..])
            } else {
                p
            }
        };
        let (a, b) = (&self.0, &after.0);
        for i in 0..a.len().max(b.len()) {
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), Some(y)) => {
                    return Some(format!(
                        "entry {:?} changed:\n  before {x:?}\n  after  {y:?}",
                        path_of(a, i)
                    ))
                }
                (Some(_), None) => return Some(format!("{:?} disappeared", path_of(a, i))),
                (None, Some(_)) => return Some(format!("{:?} appeared", path_of(b, i))),
                (None, None) => unreachable!(),
            }
        }
        None
    }
}

/// Raises the soft limit of open files to the hard limit: a walk holds
/// one descriptor per level of the tree.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The soft limit of open files, after [`raise_nofile_limit`].
pub fn nofile_limit() -> u64 {
    raise_nofile_limit();
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0)
}

fn walk_fd(dir: &fs::File, depth: usize, out: &mut Vec<Rec>) {
    let base = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut names: Vec<OsString> = fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("snapshot: read_dir at depth {depth}: {e}"))
        .map(|e| e.expect("snapshot: a directory entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let p = base.join(&name);
        let m = fs::symlink_metadata(&p).expect("snapshot: lstat");
        out.push(record(&p, name.as_bytes(), depth, &m));
        if m.is_dir() {
            match fs::File::open(&p) {
                Ok(child) => walk_fd(&child, depth + 1, out),
                // Not root: a directory the tests made unreadable.
                Err(_) => out.push(Rec {
                    name: b"<unreadable>".to_vec(),
                    depth: depth + 1,
                    ..out.last().unwrap().clone()
                }),
            }
        }
    }
}

fn record(p: &Path, name: &[u8], depth: usize, m: &fs::Metadata) -> Rec {
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(p)
        .map(|names| {
            names
                .map(|n| {
                    let v = xattr::get(p, &n).ok().flatten().unwrap_or_default();
                    (n.as_bytes().to_vec(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    xattrs.sort();
    let mut h = DefaultHasher::new();
    let ft = m.file_type();
    if ft.is_symlink() {
        fs::read_link(p)
            .expect("snapshot: readlink")
            .as_os_str()
            .as_bytes()
            .hash(&mut h);
    } else if ft.is_file() {
        match fs::File::open(p) {
            Ok(f) => hash_data(&f, m.len(), &mut h),
            Err(_) => "<unreadable>".hash(&mut h),
        }
    }
    Rec {
        depth,
        name: name.to_vec(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: if m.is_dir() { 0 } else { m.size() },
        nlink: m.nlink(),
        rdev: m.rdev(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        xattrs,
        content: h.finish(),
    }
}

/// Hashes the data regions of a file (SEEK_DATA/SEEK_HOLE), so that a
/// 1 GiB sparse file costs nothing.
fn hash_data(f: &fs::File, len: u64, h: &mut impl Hasher) {
    use nix::unistd::{lseek, Whence};
    let fd = f.as_raw_fd();
    let mut off: i64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut r = f;
    while (off as u64) < len {
        let Ok(data) = lseek(fd, off, Whence::SeekData) else {
            break;
        };
        let end = lseek(fd, data, Whence::SeekHole).unwrap_or(len as i64);
        r.seek(SeekFrom::Start(data as u64))
            .expect("snapshot: seek");
        data.hash(h);
        let mut left = (end - data) as usize;
        while left > 0 {
            let n = r
                .read(&mut buf[..left.min(1 << 16)])
                .expect("snapshot: read");
            if n == 0 {
                break;
            }
            buf[..n].hash(h);
            left -= n;
        }
        off = end;
    }
}
