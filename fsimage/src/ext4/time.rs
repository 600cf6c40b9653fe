//! The times of an ext4 inode, as [`super::times`] gives them and the
//! inode reader ([`super::image`]) decodes them.

/// One time of an inode, as the kernel decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    /// Seconds since 1970 (before it: negative).
    pub seconds: i64,
    /// Nanoseconds (0 where the inode has no `_extra` field for it).
    pub nanoseconds: u32,
}

/// The times of one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Last access.
    pub atime: Time,
    /// Last change of the data.
    pub mtime: Time,
    /// Last change of the inode.
    pub ctime: Time,
    /// Creation; `None` in an inode too small to hold it.
    pub crtime: Option<Time>,
}
