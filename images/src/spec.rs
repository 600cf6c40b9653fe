//! TODO(helper): spec
