//! Deterministic generator of the OpenCTI fixtures, and checks that the committed files match it,
//! decode without error and replay through the simulator.
//!
//! Regenerate with `HLI_REGEN_FIXTURES=1 cargo test --test tests opencti_fixtures::`.

use crate::support::demo_expected::hex;
use harfanglab_intel::sim::opencti::{OpenCtiSimConfig, ScenarioEvent, parse_scenario, serve};
use harfanglab_intel::{
    ApiOptions, Checkpoint, Decoded, EventKind, Framer, OpenCtiApi, Payload, Secret, StreamItem,
    StreamOptions, StreamReader, decode_event,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const OCTI: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";
const MITRE: &str = "extension-definition--322b8f77-262a-4cb8-a915-1e441e00329b";
const TLP_GREEN: &str = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da";
const USER: &str = "88ec0c6a-13ce-5e39-b486-354fe4a7084f";

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Deterministic uuid-shaped ids.
fn uuid(kind: u32, n: u32) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

fn ts(sec: u32) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_718_445_600 + u64::from(sec));
    humantime::format_rfc3339_millis(t).to_string()
}

fn origin() -> Value {
    json!({"socket":"query","ip":"::ffff:10.0.0.5","user_id":USER,
        "group_ids":["9c746e48-28fd-432a-abd7-d7593eb310c4"],"organization_ids":[],"user_metadata":{}})
}

/// One indicator's current STIX, mutated by updates.
#[derive(Clone)]
struct Ind {
    n: u32,
    stix: Value,
}

impl Ind {
    fn new(n: u32, name: &str, pattern: &str, pattern_type: &str, main_type: &str) -> Ind {
        let score = 40 + (n * 7) % 60;
        let platforms: Vec<&str> = match n % 4 {
            0 => vec!["windows"],
            1 => vec!["windows", "linux"],
            2 => vec!["macos", "linux", "windows"],
            _ => vec![],
        };
        let mut exts = json!({
            OCTI: {"extension_type":"property-extension","id":uuid(1, n),"type":"Indicator",
                "created_at":ts(n),"updated_at":ts(n),"is_inferred":false,"creator_ids":[USER],
                "detection":true,"score":score,"main_observable_type":main_type,
                "stix_ids":[]},
        });
        if !platforms.is_empty() {
            exts[MITRE] = json!({"extension_type":"property-extension","platforms":platforms});
        }
        let stix = json!({
            "id": format!("indicator--{}", uuid(2, n)),
            "spec_version":"2.1","type":"indicator","extensions":exts,
            "created":ts(n),"modified":ts(n),"revoked":false,"confidence":75,"lang":"en",
            "labels":["demo"],"object_marking_refs":[TLP_GREEN],
            "name":name,"description":format!("Demo indicator {n}"),
            "indicator_types":["malicious-activity"],
            "pattern":pattern,"pattern_type":pattern_type,"pattern_version":"2.1",
            "valid_from":ts(n),"valid_until":ts(n + 7_776_000),
        });
        Ind { n, stix }
    }

    fn name(&self) -> String {
        self.stix["name"].as_str().unwrap_or_default().to_owned()
    }
}

fn envelope(kind: &str, message: String, data: Value, context: Option<Value>) -> Value {
    let mut e = json!({"version":"4","type":kind,"scope":"external","message":message,
        "origin":origin(),"data":data});
    if let Some(c) = context {
        e["context"] = c;
    }
    e
}

fn line(event: &str, data: Value) -> Value {
    json!({"event": event, "data": data})
}

fn create(i: &Ind) -> Value {
    line(
        "create",
        envelope(
            "create",
            format!("creates a Indicator `{}`", i.name()),
            i.stix.clone(),
            None,
        ),
    )
}

fn delete(i: &Ind) -> Value {
    line(
        "delete",
        envelope(
            "delete",
            format!("deletes a Indicator `{}`", i.name()),
            i.stix.clone(),
            None,
        ),
    )
}

/// Apply `changes` (top-level field → new value, `None` = remove) and build the update event with
/// patch / reverse_patch in fast-json-patch style (replace / add / remove without value).
fn update(i: &mut Ind, step: u32, changes: &[(&str, Option<Value>)]) -> Value {
    let old = i.stix.clone();
    let mut patch = Vec::new();
    let mut reverse = Vec::new();
    let mut msg = Vec::new();
    for (field, new) in changes {
        let path = format!("/{field}");
        let before = old.get(*field).cloned();
        match (&before, new) {
            (Some(b), Some(n)) => {
                patch.push(json!({"op":"replace","path":path,"value":n}));
                reverse.push(json!({"op":"replace","path":path,"value":b}));
                msg.push(format!("replaces `{}` in `{field}`", render(n)));
            }
            (None, Some(n)) => {
                patch.push(json!({"op":"add","path":path,"value":n}));
                reverse.push(json!({"op":"remove","path":path}));
                msg.push(format!("adds `{}` in `{field}`", render(n)));
            }
            (Some(b), None) => {
                patch.push(json!({"op":"remove","path":path}));
                reverse.push(json!({"op":"add","path":path,"value":b}));
                msg.push(format!("removes `{}` in `{field}`", render(b)));
            }
            (None, None) => {}
        }
        match new {
            Some(n) => i.stix[*field] = n.clone(),
            None => {
                i.stix.as_object_mut().map(|o| o.remove(*field));
            }
        }
    }
    let when = ts(100_000 + step);
    let ext_path = format!("/extensions/{OCTI}/updated_at");
    patch.push(json!({"op":"replace","path":"/modified","value":when}));
    reverse.push(json!({"op":"replace","path":"/modified","value":old["modified"]}));
    patch.push(json!({"op":"replace","path":ext_path,"value":when}));
    reverse.push(
        json!({"op":"replace","path":ext_path,"value":old["extensions"][OCTI]["updated_at"]}),
    );
    i.stix["modified"] = json!(when);
    i.stix["extensions"][OCTI]["updated_at"] = json!(when);
    line(
        "update",
        envelope(
            "update",
            msg.join(" | "),
            i.stix.clone(),
            Some(json!({"patch":patch,"reverse_patch":reverse})),
        ),
    )
}

fn render(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn based_on(kind: &str, rel_n: u32, ind: &Ind, target_type: &str, value: &str) -> Value {
    let target_sid = format!("{}--{}", target_type.to_ascii_lowercase(), uuid(4, rel_n));
    let stix = json!({
        "id": format!("relationship--{}", uuid(3, rel_n)),"spec_version":"2.1","type":"relationship",
        "extensions":{OCTI:{"extension_type":"property-extension","id":uuid(5, rel_n),"type":"based-on",
            "created_at":ts(rel_n),"updated_at":ts(rel_n),"is_inferred":false,"creator_ids":[USER],
            "source_value":ind.name(),"source_ref":ind.stix["extensions"][OCTI]["id"],"source_type":"Indicator",
            "source_ref_object_marking_refs":[TLP_GREEN],
            "target_value":value,"target_ref":uuid(6, rel_n),"target_type":target_type,
            "target_ref_object_marking_refs":[TLP_GREEN]}},
        "created":ts(rel_n),"modified":ts(rel_n),"revoked":false,"confidence":75,
        "relationship_type":"based-on","source_ref":ind.stix["id"],"target_ref":target_sid,
    });
    let verb = if kind == "create" {
        "creates"
    } else {
        "deletes"
    };
    line(
        kind,
        envelope(
            kind,
            format!(
                "{verb} the relation based-on from `{}` (Indicator) to `{value}` ({target_type})",
                ind.name()
            ),
            stix,
            None,
        ),
    )
}

fn sigma_rule(k: u32) -> String {
    let id = format!("5e1a{k:04x}-1b2c-4d3e-8f40-{:012x}", 0xabc000 + k);
    format!(
        "title: Demo suspicious process {k}\nid: {id}\nstatus: experimental\ndescription: Demo Sigma rule {k}\nauthor: demo\ndate: 2024/06/15\nlogsource:\n    category: process_creation\n    product: windows\ndetection:\n    selection:\n        Image|endswith: '\\evil{k}.exe'\n        CommandLine|contains: '-enc'\n    condition: selection\nfalsepositives:\n    - Unknown\nlevel: high\n"
    )
}

fn yara_rule(k: u32) -> String {
    format!(
        "rule Demo_Malware_{k}\n{{\n    meta:\n        description = \"Demo YARA rule {k}\"\n        author = \"demo\"\n    strings:\n        $a = \"evil-marker-{k}\" ascii wide\n        $b = {{ 4D 5A 90 00 {:02X} }}\n    condition:\n        uint16(0) == 0x5A4D and any of them\n}}\n",
        k % 256
    )
}

/// The demo scenario (fixtures/demo-stream.jsonl) and its notable indicators.
fn demo_stream() -> Vec<Value> {
    let mut out = Vec::new();
    let mut n = 0u32;
    let mut next = |name: &str, pattern: &str, ptype: &str, main: &str| {
        n += 1;
        Ind::new(n, name, pattern, ptype, main)
    };
    let mut keep: Vec<Ind> = Vec::new();
    // IPv4
    for k in 0..40u32 {
        let ip = match k % 3 {
            0 => format!("198.51.100.{}", k + 1),
            1 => format!("203.0.113.{}", k + 1),
            _ => format!("192.0.2.{}", k + 1),
        };
        let i = next(
            &ip,
            &format!("[ipv4-addr:value = '{ip}']"),
            "stix",
            "IPv4-Addr",
        );
        out.push(create(&i));
        keep.push(i);
    }
    // IPv6
    for k in 0..15u32 {
        let ip = format!("2001:db8:{:x}::{:x}", k + 1, 0x10 + k);
        let i = next(
            &ip,
            &format!("[ipv6-addr:value = '{ip}']"),
            "stix",
            "IPv6-Addr",
        );
        out.push(create(&i));
        keep.push(i);
    }
    // Domains
    for k in 0..40u32 {
        let d = format!("c2-{k}.malicious-demo.example");
        let i = next(
            &d,
            &format!("[domain-name:value = '{d}']"),
            "stix",
            "Domain-Name",
        );
        out.push(create(&i));
        keep.push(i);
    }
    // URLs
    for k in 0..30u32 {
        let u = format!("http://dl-{k}.malicious-demo.example/payload/{k}.bin?id={k}");
        let i = next(&u, &format!("[url:value = '{u}']"), "stix", "Url");
        out.push(create(&i));
        keep.push(i);
    }
    // Hashes: every length and spelling.
    let spellings: [(&str, usize); 8] = [
        ("MD5", 32),
        ("'MD5'", 32),
        ("'SHA-1'", 40),
        ("SHA1", 40),
        ("'SHA-256'", 64),
        ("SHA256", 64),
        ("'SHA-512'", 128),
        ("SHA512", 128),
    ];
    for k in 0..40u32 {
        let (alg, len) = spellings[(k % 8) as usize];
        let mut h = hex(k + 1, len);
        if k % 5 == 0 {
            h = h.to_ascii_uppercase();
        }
        let i = next(
            &h,
            &format!("[file:hashes.{alg} = '{h}']"),
            "stix",
            "StixFile",
        );
        out.push(create(&i));
        keep.push(i);
    }
    // File names.
    for k in 0..5u32 {
        let f = format!("evil-dropper-{k}.exe");
        let i = next(&f, &format!("[file:name = '{f}']"), "stix", "StixFile");
        out.push(create(&i));
        keep.push(i);
    }
    // Compound patterns.
    let compounds = [
        "[ipv4-addr:value = '198.51.100.200' OR domain-name:value = 'compound-a.malicious-demo.example']".to_owned(),
        format!("[file:hashes.MD5 = '{}' AND file:name = 'compound.exe']", hex(900, 32)),
        "[url:value = 'http://compound-b.malicious-demo.example/x'] OR [domain-name:value = 'compound-b.malicious-demo.example']".to_owned(),
        "[ipv4-addr:value = '203.0.113.250'] AND [ipv6-addr:value = '2001:db8:ff::1']".to_owned(),
        format!("([file:hashes.'SHA-256' = '{}'] OR [file:hashes.'SHA-1' = '{}']) FOLLOWEDBY [domain-name:value = 'compound-c.malicious-demo.example']", hex(901, 64), hex(902, 40)),
        "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '192.0.2.250']".to_owned(),
        "[domain-name:value = 'compound-d.malicious-demo.example'] WITHIN 300 SECONDS".to_owned(),
        "[email-addr:value = 'phish@malicious-demo.example']".to_owned(),
    ];
    for (k, p) in compounds.iter().enumerate() {
        let i = next(&format!("compound-{k}"), p, "stix", "Unknown");
        out.push(create(&i));
        keep.push(i);
    }
    // Sigma and YARA rules.
    for k in 0..8u32 {
        let i = next(
            &format!("Demo suspicious process {k}"),
            &sigma_rule(k),
            "sigma",
            "Unknown",
        );
        out.push(create(&i));
        keep.push(i);
    }
    for k in 0..8u32 {
        let i = next(
            &format!("Demo_Malware_{k}"),
            &yara_rule(k),
            "yara",
            "StixFile",
        );
        out.push(create(&i));
        keep.push(i);
    }
    // Edge cases.
    let mut invalid = next(
        "demo-invalid-pattern",
        "[ipv4-addr:value = '198.51.100.77'",
        "stix",
        "IPv4-Addr",
    );
    out.push(create(&invalid));
    let snort = next(
        "demo-snort-rule",
        "alert tcp any any -> 198.51.100.99 443 (msg:\"demo\"; sid:1000001;)",
        "snort",
        "Unknown",
    );
    out.push(create(&snort));
    let shared_a = next(
        "demo-shared-ioc-a",
        "[domain-name:value = 'shared.malicious-demo.example']",
        "stix",
        "Domain-Name",
    );
    let shared_b = next(
        "demo-shared-ioc-b",
        "[domain-name:value = 'shared.malicious-demo.example' OR ipv4-addr:value = '192.0.2.222']",
        "stix",
        "Domain-Name",
    );
    out.push(create(&shared_a));
    out.push(create(&shared_b));
    let mut pattern_change = next(
        "demo-pattern-change",
        "[ipv4-addr:value = '198.51.100.150']",
        "stix",
        "IPv4-Addr",
    );
    out.push(create(&pattern_change));
    let mut rename = next(
        "demo-rename-before",
        "[domain-name:value = 'rename.malicious-demo.example']",
        "stix",
        "Domain-Name",
    );
    out.push(create(&rename));
    let mut revoke = next(
        "demo-revoked",
        "[url:value = 'http://revoked.malicious-demo.example/']",
        "stix",
        "Url",
    );
    out.push(create(&revoke));
    let mut unrevoke = next(
        "demo-unrevoked",
        "[ipv4-addr:value = '203.0.113.151']",
        "stix",
        "IPv4-Addr",
    );
    out.push(create(&unrevoke));
    let based = next(
        "demo-based-on",
        "[ipv4-addr:value = '198.51.100.160']",
        "stix",
        "IPv4-Addr",
    );
    out.push(create(&based));
    // based-on: one to the pattern's own value, one beyond the pattern (later deleted), one kept.
    out.push(based_on("create", 1, &based, "IPv4-Addr", "198.51.100.160"));
    out.push(based_on("create", 2, &based, "IPv4-Addr", "198.51.100.161"));
    out.push(based_on(
        "create",
        3,
        &based,
        "Domain-Name",
        "based-on-extra.malicious-demo.example",
    ));
    // A non-indicator object and a merge of non-indicators: counted and ignored.
    out.push(line(
        "create",
        envelope(
            "create",
            "creates a Malware `DemoRAT`".into(),
            json!({"id":"malware--00000000-0000-4000-8000-00000000d3a0","spec_version":"2.1","type":"malware",
                "name":"DemoRAT","is_family":true,"extensions":{OCTI:{"id":uuid(7,1),"type":"Malware"}}}),
            None,
        ),
    ));
    out.push(line(
        "merge",
        envelope(
            "merge",
            "merges Malware `DemoRAT-old` into `DemoRAT`".into(),
            json!({"id":"malware--00000000-0000-4000-8000-00000000d3a0","spec_version":"2.1","type":"malware","name":"DemoRAT"}),
            Some(json!({"patch":[],"reverse_patch":[],"sources":[{"id":"malware--00000000-0000-4000-8000-00000000d3a1","type":"malware","name":"DemoRAT-old"}]})),
        ),
    ));
    // Updates.
    let mut step = 0;
    let mut upd = |i: &mut Ind, ch: &[(&str, Option<Value>)]| {
        step += 1;
        update(i, step, ch)
    };
    out.push(upd(
        &mut pattern_change,
        &[
            (
                "pattern",
                Some(json!("[ipv4-addr:value = '198.51.100.151']")),
            ),
            // The platform may regenerate the standard id from the pattern (§2.5, unconfirmed).
            ("id", Some(json!(format!("indicator--{}", uuid(8, 1))))),
        ],
    ));
    out.push(upd(
        &mut rename,
        &[("name", Some(json!("demo-rename-after")))],
    ));
    out.push(upd(&mut revoke, &[("revoked", Some(json!(true)))]));
    out.push(upd(&mut unrevoke, &[("revoked", Some(json!(true)))]));
    out.push(upd(&mut unrevoke, &[("revoked", Some(json!(false)))]));
    out.push(upd(
        &mut invalid,
        &[("description", None), ("confidence", Some(json!(50)))],
    ));
    // Score / platform changes on a few plain indicators (extension fields).
    for idx in [3usize, 17, 60] {
        let i = &mut keep[idx];
        let old_score = i.stix["extensions"][OCTI]["score"].clone();
        let p = format!("/extensions/{OCTI}/score");
        i.stix["extensions"][OCTI]["score"] = json!(95);
        out.push(line(
            "update",
            envelope(
                "update",
                "replaces `95` in `Score`".into(),
                i.stix.clone(),
                Some(json!({"patch":[{"op":"replace","path":p,"value":95}],
                    "reverse_patch":[{"op":"replace","path":p,"value":old_score}]})),
            ),
        ));
    }
    // based-on beyond the pattern removed.
    out.push(based_on("delete", 2, &based, "IPv4-Addr", "198.51.100.161"));
    // Deletes: a few plain ones, one of the two sharing an IOC, a Sigma and a YARA rule.
    for idx in [0usize, 41, 56, 100, 150] {
        out.push(delete(&keep[idx]));
    }
    out.push(delete(&shared_a));
    let sigma0 = keep
        .iter()
        .find(|i| i.stix["pattern_type"] == "sigma")
        .cloned();
    let yara0 = keep
        .iter()
        .find(|i| i.stix["pattern_type"] == "yara")
        .cloned();
    out.extend(sigma0.as_ref().map(delete));
    out.extend(yara0.as_ref().map(delete));
    // Update arriving as `delete` (left the stream filters, §2.2 caveat).
    let mut leaving = keep[10].clone();
    let mut left = upd(&mut leaving, &[("revoked", Some(json!(true)))]);
    left["event"] = json!("delete");
    out.push(left);
    let _ = (snort.n, keep.len());
    out
}

/// The basic payload fixtures (from the doc's examples) and the recorded SSE stream built from them.
fn basic() -> (Vec<(&'static str, Value)>, Vec<u8>) {
    let mut ind = Ind::new(
        0x3d2b,
        "1.2.3.4",
        "[ipv4-addr:value = '1.2.3.4']",
        "stix",
        "IPv4-Addr",
    );
    ind.stix["description"] = json!("C2 server");
    ind.stix["extensions"][OCTI]["observable_values"] =
        json!([{"type":"IPv4-Addr","value":"1.2.3.4"}]);
    let create_ev = create(&ind);
    let rel_create = based_on("create", 0x7c1d, &ind, "IPv4-Addr", "1.2.3.4");
    let update_ev = update(
        &mut ind,
        1,
        &[
            ("pattern", Some(json!("[ipv4-addr:value = '5.6.7.8']"))),
            ("name", Some(json!("5.6.7.8"))),
        ],
    );
    let rel_delete = based_on("delete", 0x7c1d, &ind, "IPv4-Addr", "1.2.3.4");
    let delete_ev = delete(&ind);
    let files = vec![
        ("indicator-create.json", create_ev),
        ("based-on-create.json", rel_create),
        ("indicator-update-pattern.json", update_ev),
        ("based-on-delete.json", rel_delete),
        ("indicator-delete.json", delete_ev),
    ];
    // Recorded stream, exactly as the platform writes it (§2.1, §1.5, §1.6).
    let mut sse = String::new();
    sse.push_str("event: connected\ndata: {\"lastEventId\":\"1718445600000-0\",\"firstEventId\":\"1716000000000-0\",\"firstEventDate\":\"2024-05-18T02:40:00.000Z\",\"lastEventDate\":\"2024-06-15T10:00:00.000Z\",\"streamSize\":123456,\"connectionId\":\"6f1e2d3c-4b5a-4968-8776-655443322110\"}\n\n");
    let ids = [
        "1718445600123-0",
        "1718445600200-0",
        "1718446200456-0",
        "1718446800700-0",
        "1718446800789-0",
    ];
    for (k, (_, ev)) in files.iter().enumerate() {
        if k == 2 {
            sse.push_str(
                "id: 1718445605000-0\nevent: heartbeat\ndata: \"2024-06-15T10:00:05.000Z\"\n\n",
            );
        }
        sse.push_str(&format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            ids[k],
            ev["event"].as_str().unwrap_or(""),
            ev["data"]
        ));
    }
    sse.push_str("id: 1718446805000-0\nevent: heartbeat\ndata: \"2024-06-15T10:20:05.000Z\"\n\n");
    (files, sse.into_bytes())
}

fn expected_files() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fixtures_dir();
    let (files, sse) = basic();
    let mut out: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|(name, v)| {
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            (dir.join("opencti").join(name), s.into_bytes())
        })
        .collect();
    out.push((dir.join("stream-recorded.sse"), sse));
    let mut demo = String::new();
    for l in demo_stream() {
        demo.push_str(&l.to_string());
        demo.push('\n');
    }
    out.push((dir.join("demo-stream.jsonl"), demo.into_bytes()));
    out
}

#[test]
fn committed_fixtures_match_the_generator() {
    let regen = std::env::var_os("HLI_REGEN_FIXTURES").is_some();
    for (path, content) in expected_files() {
        if regen {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        }
        let got = std::fs::read(&path).unwrap_or_default();
        assert!(
            got == content,
            "{} is stale: run HLI_REGEN_FIXTURES=1 cargo test --test tests opencti_fixtures::",
            path.display()
        );
    }
}

fn scenario() -> Vec<ScenarioEvent> {
    let text = std::fs::read_to_string(fixtures_dir().join("demo-stream.jsonl")).unwrap();
    parse_scenario(&text).unwrap()
}

#[test]
fn demo_stream_decodes_without_errors_and_has_the_promised_content() {
    let sc = scenario();
    assert!(sc.len() >= 200, "{} events", sc.len());
    let (mut ind, mut rel, mut other, mut merge) = (0, 0, 0, 0);
    let mut types = std::collections::BTreeSet::new();
    for (k, ev) in sc.iter().enumerate() {
        let frame = harfanglab_intel::Frame {
            id: Some(format!("{k}-0")),
            event: ev.event.clone(),
            data: ev.data.to_string(),
            retry: None,
        };
        match decode_event(&frame).unwrap() {
            Decoded::Event(e) => match e.payload {
                Payload::Indicator(d) => {
                    ind += 1;
                    types.insert(d.indicator.pattern_type);
                }
                Payload::BasedOn(_) => rel += 1,
                // A merge of objects that are not indicators.
                Payload::Other { .. } if e.kind == EventKind::Merge => merge += 1,
                Payload::Other { .. } => other += 1,
            },
            d => panic!("unexpected {d:?}"),
        }
    }
    assert!(ind > 200);
    assert_eq!((rel, other, merge), (4, 1, 1));
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["sigma", "snort", "stix", "yara"]
    );
}

#[test]
fn recorded_stream_frames_are_the_fixture_events() {
    let (files, _) = basic();
    let bytes = std::fs::read(fixtures_dir().join("stream-recorded.sse")).unwrap();
    let frames = Framer::default().push(&bytes).unwrap();
    assert_eq!(frames.len(), files.len() + 3);
    assert_eq!(frames[0].event, "connected");
    assert_eq!(frames[0].id, None);
    let evs: Vec<_> = frames
        .iter()
        .filter(|f| f.event != "heartbeat")
        .skip(1)
        .collect();
    for (f, (_, v)) in evs.iter().zip(&files) {
        let data: Value = serde_json::from_str(&f.data).unwrap();
        assert_eq!(&data, &v["data"]);
    }
}

/// The demo through the simulator: the reader gets every event, and the GraphQL view follows the
/// scenario (deleted → null, based-on observables added then removed).
#[test]
fn demo_stream_replays_through_the_simulator() {
    let sc = scenario();
    let total = sc.len();
    let sim = serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario: sc,
            heartbeat: Duration::from_millis(50),
            ..OpenCtiSimConfig::default()
        },
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (stx, srx) = crossbeam_channel::bounded::<()>(0);
    let mut o = StreamOptions::new(sim.base_url(), Secret::new("sim-token"), "live");
    o.backoff_base = Duration::from_millis(10);
    let reader = StreamReader::spawn(
        o,
        Checkpoint {
            start_from: "0-0".into(),
            recover_until: None,
        },
        tx,
        srx,
    )
    .unwrap();
    let ids = sim.event_ids();
    let last = ids.last().cloned().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut events_n, mut ignored) = (0, 0);
    loop {
        match rx.recv_deadline(deadline).expect("stream ended early") {
            StreamItem::Event(e) => {
                events_n += 1;
                if e.id == last {
                    break;
                }
            }
            StreamItem::Ignored { id, .. } => {
                ignored += 1;
                if id.as_deref() == Some(last.as_str()) {
                    break;
                }
            }
            StreamItem::Malformed(e) => panic!("{e}"),
            _ => {}
        }
    }
    assert_eq!(events_n + ignored, total);
    assert_eq!(ignored, 2);
    drop(stx);
    reader.join().unwrap();

    let api = OpenCtiApi::new(ApiOptions::new(sim.base_url(), Secret::new("sim-token"))).unwrap();
    let find = |name: &str| -> Option<Value> {
        let sc = scenario();
        sc.iter()
            .find(|e| e.data["data"]["name"] == name)
            .map(|e| e.data["data"].clone())
    };
    // Deleted: null by standard id and by internal id.
    let shared_a = find("demo-shared-ioc-a").unwrap();
    assert_eq!(
        api.indicator(shared_a["id"].as_str().unwrap()).unwrap(),
        None
    );
    // Alive: answered by internal id, with the latest pattern.
    let pc = find("demo-pattern-change").unwrap();
    let internal = pc["extensions"][OCTI]["id"].as_str().unwrap();
    let got = api.indicator(internal).unwrap().unwrap();
    assert_eq!(
        got.pattern.as_deref(),
        Some("[ipv4-addr:value = '198.51.100.151']")
    );
    // based-on: the extra IP was removed, the domain stays.
    let b = find("demo-based-on").unwrap();
    let t = api
        .indicator(b["id"].as_str().unwrap())
        .unwrap()
        .unwrap()
        .to_translate();
    let mut values: Vec<_> = t.observables.iter().map(|o| o.value.as_str()).collect();
    values.sort();
    assert_eq!(
        values,
        ["198.51.100.160", "based-on-extra.malicious-demo.example"]
    );
}
