//! TODO(helper): size
