//! TODO(owner): sync
