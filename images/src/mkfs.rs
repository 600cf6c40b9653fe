//! TODO(helper): mkfs
