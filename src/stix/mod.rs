//! TODO(owner): stix
