//! TODO(owner): opencti
