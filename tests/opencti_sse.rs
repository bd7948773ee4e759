//! SSE framing of a recorded OpenCTI stream: every byte split, every line-end style, and the
//! `BufRead` iterator, give the same frames.

use harfanglab_intel::{Frame, FrameReader, Framer};
use std::io::BufReader;
use std::path::PathBuf;

fn recorded() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/stream-recorded.sse");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn with_line_ends(bytes: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if b == b'\n' {
            out.extend_from_slice(eol);
        } else {
            out.push(b);
        }
    }
    out
}

fn assert_every_split_gives(bytes: &[u8], expected: &[Frame]) {
    for k in 0..=bytes.len() {
        let mut f = Framer::default();
        let mut got = f.push(&bytes[..k]).unwrap();
        got.extend(f.push(&bytes[k..]).unwrap());
        assert_eq!(got, expected, "split at byte {k}");
    }
}

#[test]
fn every_byte_split_of_the_recorded_stream_gives_the_same_frames() {
    let bytes = recorded();
    let expected = Framer::default().push(&bytes).unwrap();
    assert_eq!(expected.len(), 8);
    assert_every_split_gives(&bytes, &expected);
}

#[test]
fn crlf_and_cr_line_ends_give_the_same_frames_at_every_split() {
    let bytes = recorded();
    let expected = Framer::default().push(&bytes).unwrap();
    for eol in [&b"\r\n"[..], &b"\r"[..]] {
        let variant = with_line_ends(&bytes, eol);
        assert_eq!(Framer::default().push(&variant).unwrap(), expected);
        assert_every_split_gives(&variant, &expected);
    }
}

#[test]
fn byte_by_byte_and_bufread_iterator_agree() {
    let bytes = with_line_ends(&recorded(), b"\r\n");
    let expected = Framer::default().push(&bytes).unwrap();
    let mut f = Framer::default();
    let mut got = Vec::new();
    for b in &bytes {
        got.extend(f.push(std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(got, expected);
    for cap in [1, 7, 4096] {
        let r = BufReader::with_capacity(cap, &bytes[..]);
        let it: Vec<Frame> = FrameReader::new(r).map(Result::unwrap).collect();
        assert_eq!(it, expected, "capacity {cap}");
    }
}

#[test]
fn comments_retry_and_multiline_data_inside_a_recorded_stream() {
    let mut bytes = b": proxy keep-alive\r\nretry: 3000\r\n\r\n".to_vec();
    bytes.extend(recorded());
    bytes.extend(b"data: line1\ndata: line2\n\n");
    let frames = Framer::default().push(&bytes).unwrap();
    assert_eq!(frames[0].retry, Some(3000));
    assert_eq!(frames.last().unwrap().data, "line1\nline2");
    assert_eq!(frames.len(), 10);
}
