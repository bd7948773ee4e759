//! TODO(owner): sim
