//! Error causes: [`Cause`] keeps the error that caused one of ours (typed, behind `source()`),
//! and [`Chain`] writes an error with its causes, once.
//!
//! The crate's errors read whole on their own: a variant's `Display` carries what its cause said
//! (`cannot reach the platform: connection refused`), because logs, dead letters and the `check`
//! report print `{e}`. `source()` hands the same cause to code that wants its type (a downcast to
//! `ureq::Error` or `io::Error`), and [`Chain`] appends only the causes a message does not
//! already say, so `main`'s one line reads `{err}: {cause}: ...` without repeating itself.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error behind one of ours, for errors that must stay `Clone` and `PartialEq` (events
/// carry them into outcomes and retries; tests compare them). It is shared, not copied: a clone
/// points at the same error. Two causes are equal when they read the same, as the `String` they
/// replace was; the variant's typed fields carry the rest of the equality.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// Keep `error` as a cause (a plain message converts too, for causes that are only text).
    pub fn new(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Cause(Arc::from(error.into()))
    }

    /// The cause itself, for `source()`.
    pub fn error(&self) -> &(dyn Error + 'static) {
        &*self.0
    }

    /// The cause as a concrete error type, if it is one.
    pub fn downcast_ref<T: Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The message only, as `Display` gives it: `Debug` never shows more than an operator sees
/// (secrets are redacted from messages, not from a foreign error's internals).
impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cause").field(&self.to_string()).finish()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// An error and its causes on one line, `{err}: {cause}: ...`, skipping a cause whose text the
/// line already holds (most of ours say their cause themselves).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Wrapper {
        says_cause: bool,
        source: io::Error,
    }

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.says_cause {
                write!(f, "cannot open the list: {}", self.source)
            } else {
                f.write_str("cannot open the list")
            }
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn chain_names_each_cause_once() {
        for says_cause in [true, false] {
            let e = Wrapper {
                says_cause,
                source: io::Error::other("disk on fire"),
            };
            assert_eq!(Chain(&e).to_string(), "cannot open the list: disk on fire");
        }
    }

    #[test]
    fn a_cause_keeps_its_type_and_compares_by_what_it_says() {
        let c = Cause::new(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(
            c.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(c, c.clone());
        assert_eq!(c, Cause::new("refused"));
        assert_ne!(c, Cause::new("reset"));
        assert_eq!(format!("{c:?}"), "Cause(\"refused\")");
    }
}
