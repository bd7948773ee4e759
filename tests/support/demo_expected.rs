//! The HarfangLab state the demo scenario must end in, written by hand from
//! `fixtures/README.md` and the generator (`tests/opencti_fixtures.rs::demo_stream`): indicator
//! number `n` (1-based creation order) has the internal id
//! `00000001-0000-4000-8000-<n as 12 hex digits>`. Shared by `demo_scenario` and
//! `service_process`; nothing here is derived from the code under test.

use harfanglab_intel::{DemoResult, IocRule, RemoteRule};
use std::collections::BTreeMap;

/// Internal id of the n-th indicator of the scenario.
pub fn internal(n: u32) -> String {
    format!("00000001-0000-4000-8000-{n:012x}")
}

/// The generator's deterministic hex strings (xorshift): `opencti_fixtures` writes the scenario
/// with them and the expected state below names the same values.
pub fn hex(seed: u32, len: usize) -> String {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

/// (type, value) → holder internal ids, every rule enabled.
pub fn expected_iocs() -> BTreeMap<(String, String), Vec<String>> {
    let mut e = BTreeMap::new();
    let mut add = |t: &str, v: String, holders: &[u32]| {
        let mut h: Vec<String> = holders.iter().map(|&n| internal(n)).collect();
        h.sort();
        e.insert((t.to_owned(), v), h);
    };
    // 40 IPv4 indicators (n = 1..40). Deleted: #1 (198.51.100.1). #11 (203.0.113.11) arrives
    // as `event: delete` with a revoking update payload: it left the stream, so it is released.
    for k in 0..40u32 {
        let ip = match k % 3 {
            0 => format!("198.51.100.{}", k + 1),
            1 => format!("203.0.113.{}", k + 1),
            _ => format!("192.0.2.{}", k + 1),
        };
        if k != 0 && k != 10 {
            add("ip_both", ip, &[k + 1]);
        }
    }
    // 15 IPv6 (n = 41..55); #42 (2001:db8:2::11) deleted.
    for k in 0..15u32 {
        if k != 1 {
            add(
                "ip_both",
                format!("2001:db8:{:x}::{:x}", k + 1, 0x10 + k),
                &[41 + k],
            );
        }
    }
    // 40 domains (n = 56..95); #57 (c2-1) deleted.
    for k in 0..40u32 {
        if k != 1 {
            add(
                "domain_name",
                format!("c2-{k}.malicious-demo.example"),
                &[56 + k],
            );
        }
    }
    // 30 URLs (n = 96..125); #101 (dl-5) deleted.
    for k in 0..30u32 {
        if k != 5 {
            add(
                "url",
                format!("http://dl-{k}.malicious-demo.example/payload/{k}.bin?id={k}"),
                &[96 + k],
            );
        }
    }
    // 40 hashes (n = 126..165) of 32/40/64/128 hex digits, some written upper-case in the
    // pattern: HarfangLab stores them lower-case. #151 (hex(26, 32), upper-case) deleted.
    let lens = [32, 32, 40, 40, 64, 64, 128, 128];
    for k in 0..40u32 {
        if k != 25 {
            add("hash", hex(k + 1, lens[(k % 8) as usize]), &[126 + k]);
        }
    }
    // 5 file names (n = 166..170).
    for k in 0..5u32 {
        add("filename", format!("evil-dropper-{k}.exe"), &[166 + k]);
    }
    // Compound patterns (n = 171..178):
    // 0: IP OR domain → both.
    add("ip_both", "198.51.100.200".into(), &[171]);
    add(
        "domain_name",
        "compound-a.malicious-demo.example".into(),
        &[171],
    );
    // 1: hash AND file name inside one observation → only the hash (the name alone is too broad).
    add("hash", hex(900, 32), &[172]);
    // 2: URL observation OR domain observation → both.
    add(
        "url",
        "http://compound-b.malicious-demo.example/x".into(),
        &[173],
    );
    add(
        "domain_name",
        "compound-b.malicious-demo.example".into(),
        &[173],
    );
    // 3: two observations joined by AND → both values.
    add("ip_both", "203.0.113.250".into(), &[174]);
    add("ip_both", "2001:db8:ff::1".into(), &[174]);
    // 4 (FOLLOWEDBY), 5 (reference path), 6 (WITHIN), 7 (email address): nothing.
    // Sigma #179..186, YARA #187..194 (checked below); #195 invalid pattern and #196 snort:
    // nothing. Shared domain: a (#197) deleted, b (#198) keeps it, plus its own IP.
    add(
        "domain_name",
        "shared.malicious-demo.example".into(),
        &[198],
    );
    add("ip_both", "192.0.2.222".into(), &[198]);
    // #199 pattern change .150 → .151: only the new value.
    add("ip_both", "198.51.100.151".into(), &[199]);
    // #200 renamed: same value, same holder.
    add(
        "domain_name",
        "rename.malicious-demo.example".into(),
        &[200],
    );
    // #201 revoked: its URL is gone (remove_indicator = true in the demo).
    // #202 revoked then un-revoked: back.
    add("ip_both", "203.0.113.151".into(), &[202]);
    // #203 based-on: pattern value (also linked), the extra linked domain; the linked
    // 198.51.100.161 was unlinked later, so released.
    add("ip_both", "198.51.100.160".into(), &[203]);
    add(
        "domain_name",
        "based-on-extra.malicious-demo.example".into(),
        &[203],
    );
    e
}

pub fn check_state(r: &DemoResult) {
    check_lists(&r.iocs, &r.sigma, &r.yara);
}

/// The three HarfangLab lists are exactly the expected ones.
pub fn check_lists(iocs: &[IocRule], sigma: &[RemoteRule], yara: &[RemoteRule]) {
    let expected = expected_iocs();
    let mut actual = BTreeMap::new();
    for rule in iocs {
        assert!(rule.enabled, "disabled rule left behind: {rule:?}");
        let mut holders = DemoResult::holders(rule);
        holders.sort();
        let prev = actual.insert((rule.ioc_type.clone(), rule.value.clone()), holders);
        assert!(
            prev.is_none(),
            "duplicate IOC rule {} {}",
            rule.ioc_type,
            rule.value
        );
    }
    for (k, v) in &expected {
        assert_eq!(actual.get(k), Some(v), "IOC {k:?}");
    }
    for k in actual.keys() {
        assert!(expected.contains_key(k), "unexpected IOC {k:?}");
    }
    assert_eq!(iocs.len(), 178);

    // Sigma: rules 1..7 (rule 0 deleted), identified by their own `id:`.
    let mut sigma_names: Vec<(String, bool)> =
        sigma.iter().map(|s| (s.name.clone(), s.enabled)).collect();
    sigma_names.sort();
    let want: Vec<(String, bool)> = (1..8)
        .map(|k| (format!("Demo suspicious process {k}"), true))
        .collect();
    assert_eq!(sigma_names, want);
    for s in sigma {
        let k: u32 = s.name.rsplit(' ').next().unwrap().parse().unwrap();
        let id = format!("5e1a{k:04x}-1b2c-4d3e-8f40-{:012x}", 0xabc000 + k);
        assert!(s.content.contains(&format!("id: {id}")), "{}", s.name);
    }
    // YARA: files 1..7 (0 deleted), each with its one rule.
    let mut yara_names: Vec<(String, Vec<String>)> = yara
        .iter()
        .map(|y| (y.name.clone(), y.rule_names.clone()))
        .collect();
    yara_names.sort();
    let want: Vec<(String, Vec<String>)> = (1..8)
        .map(|k| {
            (
                format!("Demo_Malware_{k}"),
                vec![format!("Demo_Malware_{k}")],
            )
        })
        .collect();
    assert_eq!(yara_names, want);
}
