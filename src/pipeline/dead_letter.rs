//! The dead-letter file: one JSON Lines record per event that failed permanently (or ran out of
//! retries), so an operator can see and replay what the connector could not apply.
//!
//! Owned and written by the pipeline owner thread only. Records are buffered and made durable
//! (flush + fsync) by [`DeadLetterLog::sync`], which the owner calls before every checkpoint save:
//! the saved watermark never passes a record that is not on disk. The directory and the file name
//! (one file per connector id) come from the caller.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

/// Longest payload excerpt kept in a record, in bytes (cut on a char boundary).
pub const EXCERPT_MAX: usize = 512;

/// One dead-letter line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// RFC 3339 UTC time of the failure.
    pub time: String,
    pub event_id: String,
    pub key: String,
    /// Stream event name (`create`, `update`, `delete`) or empty when the handler did not say.
    pub event: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

impl DeadLetter {
    /// A record stamped now; the excerpt is truncated to [`EXCERPT_MAX`] bytes.
    pub fn new(
        event_id: &str,
        key: &str,
        event: String,
        reason: String,
        excerpt: Option<String>,
    ) -> Self {
        DeadLetter {
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            event_id: event_id.to_owned(),
            key: key.to_owned(),
            event,
            reason,
            excerpt: excerpt.map(|e| truncate(e, EXCERPT_MAX)),
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Why the dead-letter file could not be opened or written. Always fatal for the pipeline:
/// dropping a record silently would lose the only trace of a failed event.
#[derive(Debug)]
pub enum DeadLetterError {
    /// The file name is empty or contains a path separator or `..`.
    InvalidName(String),
    /// Creating the directory or opening the file failed.
    Open { path: PathBuf, source: io::Error },
    /// Writing, flushing or fsyncing a record failed (disk full, ...).
    Write { path: PathBuf, source: io::Error },
}

impl fmt::Display for DeadLetterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterError::InvalidName(name) => {
                write!(
                    f,
                    "invalid dead-letter file name {name:?}: must be a plain file name"
                )
            }
            DeadLetterError::Open { path, source } => {
                write!(
                    f,
                    "cannot open dead-letter file {}: {source}",
                    path.display()
                )
            }
            DeadLetterError::Write { path, source } => {
                write!(
                    f,
                    "cannot write dead-letter file {}: {source}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for DeadLetterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeadLetterError::InvalidName(_) => None,
            DeadLetterError::Open { source, .. } | DeadLetterError::Write { source, .. } => {
                Some(source)
            }
        }
    }
}

/// An append-only JSON Lines dead-letter file (or a disabled log that only counts).
#[derive(Debug)]
pub struct DeadLetterLog {
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    /// Records written to the buffer but not yet fsync'd.
    unsynced: usize,
    written: u64,
}

impl DeadLetterLog {
    /// Open (creating the directory and file if needed) `dir/file_name` for appending. Fails
    /// early so a bad directory is a startup error, not a surprise at the first failure.
    pub fn open(dir: &Path, file_name: &str) -> Result<Self, DeadLetterError> {
        if file_name.is_empty()
            || file_name.contains(['/', '\\'])
            || file_name == "."
            || file_name == ".."
        {
            return Err(DeadLetterError::InvalidName(file_name.to_owned()));
        }
        let path = dir.join(file_name);
        std::fs::create_dir_all(dir).map_err(|source| DeadLetterError::Open {
            path: path.clone(),
            source,
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| DeadLetterError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(DeadLetterLog {
            path: Some(path),
            file: Some(BufWriter::new(file)),
            unsynced: 0,
            written: 0,
        })
    }

    /// A log that keeps nothing (dry runs, benchmarks); failures are still logged and counted.
    pub fn disabled() -> Self {
        DeadLetterLog {
            path: None,
            file: None,
            unsynced: 0,
            written: 0,
        }
    }

    /// The file path, if enabled.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Records appended since this log was opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Buffer one record; it is durable after the next [`DeadLetterLog::sync`].
    pub fn append(&mut self, record: &DeadLetter) -> Result<(), DeadLetterError> {
        self.written += 1;
        let (Some(file), Some(path)) = (self.file.as_mut(), self.path.as_ref()) else {
            return Ok(());
        };
        let write = |file: &mut BufWriter<File>| -> io::Result<()> {
            serde_json::to_writer(&mut *file, record).map_err(io::Error::other)?;
            file.write_all(b"\n")
        };
        write(file).map_err(|source| DeadLetterError::Write {
            path: path.clone(),
            source,
        })?;
        self.unsynced += 1;
        Ok(())
    }

    /// Flush and fsync buffered records (no-op when nothing is pending).
    pub fn sync(&mut self) -> Result<(), DeadLetterError> {
        if self.unsynced == 0 {
            return Ok(());
        }
        let (Some(file), Some(path)) = (self.file.as_mut(), self.path.as_ref()) else {
            return Ok(());
        };
        file.flush()
            .and_then(|()| file.get_ref().sync_data())
            .map_err(|source| DeadLetterError::Write {
                path: path.clone(),
                source,
            })?;
        self.unsynced = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hli-dead-letter-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_are_appended_as_json_lines_after_sync() {
        let dir = temp_dir("append");
        let mut log = DeadLetterLog::open(&dir, "connector-1.jsonl").expect("open");
        let rec = DeadLetter::new(
            "1-0",
            "indicator--a",
            "create".into(),
            "HTTP 400: bad value".into(),
            Some("x".repeat(2000)),
        );
        log.append(&rec).expect("append");
        log.append(&DeadLetter::new(
            "2-0",
            "indicator--b",
            String::new(),
            "r".into(),
            None,
        ))
        .expect("append");
        log.sync().expect("sync");
        // Reopen appends instead of truncating.
        drop(log);
        let mut log = DeadLetterLog::open(&dir, "connector-1.jsonl").expect("reopen");
        log.append(&DeadLetter::new(
            "3-0",
            "k",
            String::new(),
            "r".into(),
            None,
        ))
        .expect("append");
        log.sync().expect("sync");

        let text = std::fs::read_to_string(dir.join("connector-1.jsonl")).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["event_id"], "1-0");
        assert_eq!(lines[0]["key"], "indicator--a");
        assert_eq!(lines[0]["event"], "create");
        assert_eq!(lines[0]["reason"], "HTTP 400: bad value");
        assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let excerpt = lines[0]["excerpt"].as_str().expect("excerpt");
        assert!(excerpt.len() <= EXCERPT_MAX + '…'.len_utf8());
        assert!(lines[1].get("excerpt").is_none());
        assert_eq!(lines[2]["event_id"], "3-0");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn path_like_names_are_rejected() {
        let dir = temp_dir("names");
        for bad in ["", "../x", "a/b", "..", "a\\b"] {
            assert!(matches!(
                DeadLetterLog::open(&dir, bad),
                Err(DeadLetterError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn excerpt_is_cut_on_a_char_boundary() {
        let s = truncate("é".repeat(400), 511);
        assert!(s.len() <= 511 + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn disabled_log_counts_only() {
        let mut log = DeadLetterLog::disabled();
        log.append(&DeadLetter::new(
            "1-0",
            "k",
            String::new(),
            "r".into(),
            None,
        ))
        .expect("append");
        log.sync().expect("sync");
        assert_eq!(log.written(), 1);
        assert!(log.path().is_none());
    }
}
