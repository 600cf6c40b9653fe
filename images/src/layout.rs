//! TODO(helper): layout
