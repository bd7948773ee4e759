//! `Secret`: a string that never shows itself in `Debug`, `Display` or logs (API tokens).
//!
//! The only way to read the value is [`Secret::expose`], which call sites use exactly where the
//! token goes on the wire (an `Authorization` header).

use std::fmt;

/// A secret string (an OpenCTI or HarfangLab token). Formatting prints `[REDACTED]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `url` with any `user:pass@` userinfo replaced by `***@`, for logs, errors and Debug output
/// (a URL from the configuration may embed credentials). Everything else is kept as is.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_url_hides_userinfo_only() {
        assert_eq!(
            redact_url("https://user:p%40ss@octi.example:8443/graphql?x=a@b"),
            "https://***@octi.example:8443/graphql?x=a@b"
        );
        assert_eq!(redact_url("http://tok@hl.example"), "http://***@hl.example");
        assert_eq!(
            redact_url("https://hl.example/api?mail=a@b"),
            "https://hl.example/api?mail=a@b"
        );
        assert_eq!(redact_url("u:p@host/x"), "***@host/x");
        assert_eq!(redact_url(""), "");
    }

    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("tok-123456");
        assert!(!format!("{s:?}").contains("tok-123456"));
        assert!(!format!("{s}").contains("tok-123456"));
        assert_eq!(s.expose(), "tok-123456");
    }
}
