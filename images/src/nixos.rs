//! TODO(helper): nixos
