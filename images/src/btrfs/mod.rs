//! btrfs on-disk reader (in progress)
