//! TODO(owner): notify
