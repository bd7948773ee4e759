//! TODO(owner): harfanglab
