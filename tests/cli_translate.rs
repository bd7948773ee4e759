//! `harfanglab-intel translate` end to end, through the built binary.
//!
//! The first group needs no translation engine (the inputs fail before translation). The tests
//! marked "needs translate::translate" exercise the real translation and fail until that module
//! is implemented (it is `unimplemented!()` in the config branch; each such item becomes an
//! "internal error" line, never a crash).

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::corpora::{full_corpora, sample_dir};

use crate::support::BIN;

/// `translate` with `args` and its log level, every standard stream piped.
fn spawn_translate(args: &[&str], log_level: &str) -> std::process::Child {
    Command::new(BIN)
        .arg("translate")
        .args(args)
        .env_clear()
        .env("CONNECTOR_LOG_LEVEL", log_level)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Run `translate` with `args`, feeding `stdin`; returns (exit code, parsed stdout lines, stderr).
fn translate(args: &[&str], stdin: &[u8]) -> (i32, Vec<Value>, String) {
    let mut child = spawn_translate(args, "error");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Write from another thread so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("output is not JSON ({e}): {l}"))
        })
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_items_become_error_lines_and_the_run_goes_on() {
    let input = b"{\"type\":\"relationship\",\"id\":\"relationship--1\"}\n\nnot json\n{\"name\":\"no pattern\"}\n{\"type\":\"bundle\",\"objects\":[{\"type\":\"indicator\",\"name\":\"x\"}]}\n";
    let (code, lines, err) = translate(&["-"], input);
    assert_eq!(code, 0, "errors are data, not a failed run: {err}");
    assert_eq!(lines.len(), 4);
    let errors: Vec<&str> = lines.iter().map(|l| l["error"].as_str().unwrap()).collect();
    assert_eq!(
        errors[0],
        "line 1: not an indicator (type \"relationship\")"
    );
    assert!(
        errors[1].starts_with("line 3, column 2: invalid JSON"),
        "{}",
        errors[1]
    );
    assert_eq!(errors[2], "line 4: missing field `pattern`");
    assert_eq!(errors[3], "line 5, object 0: missing field `pattern`");
    assert_eq!(lines[3]["object"], 0);
    for l in &lines {
        assert_eq!(l["iocs"], Value::Array(vec![]));
        assert!(l["sigma"].is_null() && l["yara"].is_null());
    }
}

#[test]
fn strict_turns_item_errors_into_exit_1() {
    let (code, lines, _) = translate(&["--strict"], b"{\"pattern\":1}\n");
    assert_eq!(code, 1);
    assert_eq!(
        lines[0]["error"],
        "line 1: field `pattern` must be a string, found a number"
    );
    let (code, lines, _) = translate(&["--strict"], b"");
    assert_eq!((code, lines.len()), (0, 0));
}

#[test]
fn unreadable_input_file_exits_1_with_the_path() {
    let (code, lines, err) = translate(&["/nonexistent/indicators.jsonl"], b"");
    assert_eq!(code, 1);
    assert!(lines.is_empty());
    assert!(
        err.contains("cannot read /nonexistent/indicators.jsonl"),
        "{err}"
    );
}

// ---- needs translate::translate (fails until the translation engine is merged) ----

#[test]
fn bundle_indicators_are_translated_in_order() {
    let bundle = br#"{
  "type": "bundle",
  "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
  "objects": [
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
     "name": "c2 ip", "pattern": "[ipv4-addr:value = '198.51.100.7']", "pattern_type": "stix",
     "valid_from": "2024-01-01T00:00:00Z"},
    {"type": "identity", "id": "identity--1", "name": "someone"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--0f4a2c1e-3b9e-5d2a-9c61-2f7d1b8e4a11",
     "name": "bad domain", "pattern": "[domain-name:value = 'evil.example']", "pattern_type": "stix",
     "valid_from": "2024-01-01T00:00:00Z"}
  ]
}"#;
    let (code, lines, err) = translate(&[], bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0]["indicator"],
        "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"
    );
    assert!(lines[0]["error"].is_null(), "{}", lines[0]);
    assert_eq!(lines[0]["iocs"][0]["type"], "ip_both");
    assert_eq!(lines[0]["iocs"][0]["value"], "198.51.100.7");
    assert_eq!(lines[1]["object"], 2);
    assert_eq!(lines[1]["iocs"][0]["type"], "domain_name");
    assert_eq!(lines[1]["iocs"][0]["value"], "evil.example");
}

#[test]
fn every_sample_pattern_translates_without_error_in_input_order() {
    every_real_pattern_translates_without_error_in_input_order(&sample_dir());
}

#[test]
fn every_real_corpus_pattern_translates_without_error_in_input_order() {
    if let Some(dir) = full_corpora(
        "cli_translate::every_real_corpus_pattern_translates_without_error_in_input_order",
    ) {
        every_real_pattern_translates_without_error_in_input_order(&dir);
    }
}

fn every_real_pattern_translates_without_error_in_input_order(corpora: &std::path::Path) {
    let path = corpora.join("stix-patterns/real-patterns.jsonl");
    let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expected = input
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    let (code, lines, err) = translate(&["--strict", path.to_str().unwrap()], b"");
    assert_eq!(lines.len(), expected);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["line"], i + 1, "output order");
        // Valid STIX that HarfangLab cannot take is `skipped`, never an `error`.
        assert!(l["error"].is_null(), "{l}");
    }
    assert_eq!(code, 0, "{err}");
    // The first corpus line is a single SHA-256 comparison.
    assert_eq!(lines[0]["iocs"][0]["type"], "hash");
    assert_eq!(
        lines[0]["iocs"][0]["value"],
        "3cb8174becb3c89318ed01ccd76e71cbeb8bc9e0fcbce8e110d40cd71af20fa2"
    );
}

/// Three valid indicators, one IOC each.
const THREE: &str = "{\"id\":\"ind-1\",\"pattern\":\"[domain-name:value = 'one.example']\"}\n\
{\"id\":\"ind-2\",\"pattern\":\"[domain-name:value = 'two.example']\"}\n\
{\"id\":\"ind-3\",\"pattern\":\"[domain-name:value = 'three.example']\"}\n";

#[test]
fn a_bad_first_line_costs_that_line_only() {
    for first in [
        &b"{\"id\": broken"[..],
        b"# indicators exported on Monday",
        b"\xff\xfe not text",
        b"{\"id\": \"cut\",",
    ] {
        let mut input = first.to_vec();
        input.push(b'\n');
        input.extend_from_slice(THREE.as_bytes());
        let (code, lines, err) = translate(&[], &input);
        assert_eq!(code, 0, "{err}");
        assert_eq!(lines.len(), 4, "{first:?}: {lines:?}");
        assert!(
            lines[0]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("line 1, column ")),
            "{}",
            lines[0]
        );
        for (i, l) in lines[1..].iter().enumerate() {
            assert_eq!(l["indicator"], format!("ind-{}", i + 1), "{first:?}");
            assert_eq!(l["line"], i + 2);
            assert!(l["error"].is_null(), "{l}");
            assert_eq!(l["iocs"][0]["type"], "domain_name");
        }
    }
}

#[test]
fn errors_in_a_pretty_printed_bundle_name_their_real_line() {
    let bundle = br#"{
  "type": "bundle",
  "id": "bundle--1",
  "objects": [
    {
      "type": "indicator",
      "id": "indicator--a",
      "pattern": "[ipv4-addr:value = '198.51.100.7']"
    },
    {
      "type": "indicator",
      "id": "indicator--b",
      "pattern": "[ipv4-addr:value = '198.51.100.8'"
    },
    {
      "type": "indicator",
      "id": "indicator--c",
      "x_opencti_score": "high",
      "pattern": "[ipv4-addr:value = '198.51.100.9']"
    }
  ]
}"#;
    let (code, lines, err) = translate(&[], bundle);
    assert_eq!(code, 0, "{err}");
    let got: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got[0], (5, ""));
    assert_eq!(got[1].0, 10);
    assert!(
        got[1]
            .1
            .starts_with("line 10, object 1: invalid STIX pattern"),
        "{}",
        got[1].1
    );
    assert_eq!(
        got[2],
        (
            15,
            "line 15, object 2: field `x_opencti_score` must be a number, found a string"
        )
    );
    // A syntax error names the line it is on.
    let broken = String::from_utf8_lossy(bundle)
        .replace("\"id\": \"indicator--c\",", "\"id\": \"indicator--c\"");
    let (_, lines, _) = translate(&[], broken.as_bytes());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["line"], 18);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("line 18, column 7: invalid JSON: expected `,` or `}`"),
        "{}",
        lines[0]
    );
}

#[test]
fn an_indicator_without_pattern_keeps_its_id() {
    let (_, lines, _) = translate(
        &[],
        b"{\"type\":\"indicator\",\"id\":\"indicator--4f2b\",\"name\":\"no pattern\"}\n",
    );
    assert_eq!(lines[0]["indicator"], "indicator--4f2b");
    assert_eq!(lines[0]["error"], "line 1: missing field `pattern`");
}

#[test]
fn unhandled_pattern_types_are_skipped_not_failed() {
    let (code, lines, err) = translate(
        &["--strict"],
        b"{\"id\":\"snort-1\",\"pattern_type\":\"snort\",\"pattern\":\"alert tcp any any -> any 80\"}\n",
    );
    assert_eq!(
        code, 0,
        "skipped is not an error, even with --strict: {err}"
    );
    assert!(lines[0]["error"].is_null(), "{}", lines[0]);
    assert_eq!(lines[0]["iocs"], Value::Array(vec![]));
    assert_eq!(lines[0]["skipped"][0]["path"], "pattern_type");
    assert_eq!(lines[0]["skipped"][0]["value"], "snort");
    assert_eq!(
        lines[0]["skipped"][0]["reason"],
        "pattern_type \"snort\" is not handled (stix, sigma, yara)"
    );
}

/// `n` JSON lines of distinct domain indicators.
fn many(n: usize) -> Vec<u8> {
    let mut input = Vec::new();
    for i in 0..n {
        input.extend_from_slice(
            format!("{{\"id\":\"i{i}\",\"pattern\":\"[domain-name:value = 'd{i}.example']\"}}\n")
                .as_bytes(),
        );
    }
    input
}

#[test]
fn output_starts_before_the_input_ends() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    let mut child = spawn_translate(&[], "error");
    // Read the output as it comes (all of it, so the child never blocks on a full pipe),
    // reporting the first line at once.
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = first_tx.send(first);
        }
        lines.count()
    });
    // More than one batch, then the input stays open until the first line has come out.
    let mut stdin = child.stdin.take().unwrap();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&many(3000)).unwrap();
        stdin.flush().unwrap();
        let _ = close_rx.recv_timeout(std::time::Duration::from_secs(30));
    });
    let first = first_rx.recv_timeout(std::time::Duration::from_secs(30));
    drop(close_tx);
    writer.join().unwrap();
    let rest = reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let first = first.expect("no output while the input was still open: the input is not streamed");
    assert!(first.contains("\"indicator\":\"i0\""), "{first}");
    assert_eq!(rest, 2999);
}

#[test]
fn a_closed_output_pipe_stops_translate_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = spawn_translate(&[], "info");
    let mut stdin = child.stdin.take().unwrap();
    let input = many(400_000); // ~30 MB: far more than the pipes hold
    let total = input.len();
    let writer = std::thread::spawn(move || {
        let mut written = 0;
        for chunk in input.chunks(64 * 1024) {
            if stdin.write_all(chunk).is_err() {
                break; // the process stopped reading: exactly what `| head -1` expects
            }
            written += chunk.len();
        }
        written
    });
    // `| head -1`: read one line, then close the pipe.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    let written = writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.contains("\"indicator\":\"i0\""), "{first}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert!(
        written < total,
        "translate read all {total} bytes after its output was closed"
    );
}
