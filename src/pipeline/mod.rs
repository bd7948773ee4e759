//! TODO(owner): pipeline
