//! TODO(helper): closure
