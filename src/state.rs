//! TODO(owner): state
