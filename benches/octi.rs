//! OpenCTI side throughput: SSE framing, event decoding, and the reader end to end against the
//! simulator (loopback). Prints numbers; run with `cargo bench --bench octi`.

use harfanglab_intel::sim::opencti::{OpenCtiSimConfig, load_scenario, serve};
use harfanglab_intel::{
    Checkpoint, Framer, Secret, StreamItem, StreamOptions, StreamReader, decode_event,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo-stream.jsonl");
    let demo = load_scenario(&path).expect("demo scenario");
    let repeat = 20;
    let mut sse = Vec::new();
    let mut n = 0u64;
    for r in 0..repeat {
        for ev in &demo {
            n += 1;
            sse.extend(
                format!("id: {r}-{n}\nevent: {}\ndata: {}\n\n", ev.event, ev.data).as_bytes(),
            );
        }
    }
    let mb = sse.len() as f64 / 1e6;

    let t = Instant::now();
    let mut frames = Vec::new();
    let mut f = Framer::default();
    for chunk in sse.chunks(16 * 1024) {
        f.push_into(chunk, &mut frames).expect("frames");
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "sse framer: {} frames, {mb:.1} MB in {dt:.3}s = {:.0} MB/s, {:.0} frames/s",
        frames.len(),
        mb / dt,
        frames.len() as f64 / dt
    );

    let t = Instant::now();
    let mut ok = 0;
    for fr in &frames {
        if decode_event(fr).is_ok() {
            ok += 1;
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "decode: {ok} events in {dt:.3}s = {:.0} events/s",
        ok as f64 / dt
    );

    // End to end: simulator → TCP → reader thread → channel.
    let mut scenario = Vec::new();
    for _ in 0..repeat {
        scenario.extend(demo.iter().cloned());
    }
    let total = scenario.len();
    let sim = serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario,
            heartbeat: Duration::from_secs(1),
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("simulator");
    let (tx, rx) = crossbeam_channel::bounded(256);
    let (stx, srx) = crossbeam_channel::bounded::<()>(0);
    let opts = StreamOptions::new(sim.base_url(), Secret::new("sim-token"), "live");
    let t = Instant::now();
    let reader = StreamReader::spawn(
        opts,
        Checkpoint {
            start_from: "0-0".into(),
            recover_until: None,
        },
        tx,
        srx,
    )
    .expect("reader");
    let mut got = 0;
    while got < total {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(StreamItem::Event(_) | StreamItem::Ignored { .. }) => got += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "reader end to end (loopback simulator): {got}/{total} events in {dt:.3}s = {:.0} events/s",
        got as f64 / dt
    );
    drop(stx);
    let _ = reader.join();
}
