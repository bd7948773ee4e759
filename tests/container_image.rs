//! The container image as users run it, from its exported root filesystem: `scripts/test-image.sh`
//! builds the image, exports it (`HLI_IMAGE_ROOTFS`, with the engine's `image inspect` JSON
//! beside it) and runs this test. Each case starts the image's entrypoint the way a runtime
//! would: `chroot` into the root filesystem as the image's user, with the image's environment,
//! an `/etc/hosts` and `/etc/resolv.conf` written like Docker's (the embedded DNS server at
//! 127.0.0.11), against the simulators on loopback. It registers, applies the demo scenario
//! (checked in the HarfangLab simulator's state), answers the image's HEALTHCHECK command, and
//! stops on the image's STOPSIGNAL with exit 0 and the checkpoint saved.
//!
//! The root has nothing but the static binary, a CA bundle and passwd/group, so it also proves
//! that the binary resolves names (from `/etc/hosts`, and from the DNS server in
//! `/etc/resolv.conf`), verifies TLS with `OPENCTI_CA_FILE` / `HARFANGLAB_INTEL_CA_FILE` (the
//! TLS endpoints are `socat` with a CA made by `openssl` here), and writes UTC timestamps
//! with `TZ` set and no tz database.
//!
//! Needs root (chroot), `socat` and `openssl`; binds 127.0.0.11:53, so the script runs it in a
//! fresh network namespace. The tests are `#[ignore]`d, so a plain `cargo test` lists them as
//! ignored; the script runs them with `--ignored`, and then a missing image fails them.

use crate::support::service::{at_or_after, demo_scenario, start_sims, wait_exit};
use harfanglab_intel::sim::harfanglab::HarfangLabSim;
use harfanglab_intel::sim::opencti::OpenCtiSim;
use serde_json::Value;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Where Docker's embedded DNS server listens for containers on user-defined networks.
const RUNTIME_DNS: &str = "127.0.0.11:53";
/// The state directory the image declares as a VOLUME (and sets as HARFANGLAB_INTEL_STATE_DIR).
const STATE_DIR: &str = "var/lib/harfanglab-intel";

/// The exported image: its root filesystem and the configuration the engine reported.
struct Image {
    root: PathBuf,
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    user: String,
    stop_signal: String,
    healthcheck: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The image under test (loaded and prepared once).
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(load_image)
}

fn load_image() -> Image {
    let root = std::env::var_os("HLI_IMAGE_ROOTFS")
        .map(PathBuf::from)
        .expect(
            "HLI_IMAGE_ROOTFS (the exported root filesystem) is not set: run scripts/test-image.sh",
        );
    let config_path = std::env::var_os("HLI_IMAGE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.with_extension("json"));
    let text = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|e| panic!("image configuration {}: {e}", config_path.display()));
    let inspect: Value = serde_json::from_str(&text).expect("image inspect JSON");
    let image = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    let config = &image["Config"];
    // podman reports the health check beside Config, docker inside it.
    let health = if image["Healthcheck"].is_object() {
        &image["Healthcheck"]
    } else {
        &config["Healthcheck"]
    };
    let env = strings(&config["Env"])
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let mut entrypoint = strings(&config["Entrypoint"]);
    entrypoint.extend(strings(&config["Cmd"]));
    let img = Image {
        root,
        env,
        entrypoint,
        user: config["User"].as_str().unwrap_or_default().to_owned(),
        stop_signal: config["StopSignal"].as_str().unwrap_or_default().to_owned(),
        healthcheck: strings(&health["Test"]),
    };
    prepare_root(&img);
    img
}

/// What a container runtime adds to the root before it starts the entrypoint.
fn prepare_root(img: &Image) {
    let etc = img.root.join("etc");
    std::fs::write(
        etc.join("hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\thli-image-test\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("resolv.conf"),
        "# Docker's embedded DNS server, with a search domain as Kubernetes writes them\nsearch hli.test\nnameserver 127.0.0.11\noptions ndots:0\n",
    )
    .unwrap();
    std::fs::write(etc.join("hostname"), "hli-image-test\n").unwrap();
}

// ---- the image's metadata and layout ----------------------------------------------------

#[test]
#[ignore = "needs the exported image: scripts/test-image.sh runs it"]
fn the_image_holds_only_the_binary_a_ca_bundle_and_the_user() {
    let img = image();
    assert_eq!(img.user, "65532:65532");
    assert_eq!(img.stop_signal, "SIGTERM");
    assert_eq!(img.entrypoint, ["/harfanglab-intel", "run"]);
    assert_eq!(img.healthcheck, ["CMD", "/harfanglab-intel", "healthcheck"]);
    let env: HashMap<_, _> = img.env.iter().cloned().collect();
    assert_eq!(
        env.get("HARFANGLAB_INTEL_STATE_DIR").map(String::as_str),
        Some("/var/lib/harfanglab-intel")
    );
    assert_eq!(
        env.get("CONNECTOR_EXPOSE_METRICS").map(String::as_str),
        Some("true")
    );

    // Every file of the image (the runtime's /etc/hosts, resolv.conf and hostname aside).
    let mut files = Vec::new();
    list_files(&img.root, &img.root, &mut files);
    files.retain(|f| !matches!(f.as_str(), "etc/hosts" | "etc/resolv.conf" | "etc/hostname"));
    files.retain(|f| !f.starts_with("etc/hli-test/") && !f.starts_with(&format!("{STATE_DIR}/")));
    files.sort();
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "harfanglab-intel"
        ]
    );
    let binary = std::fs::read(img.root.join("harfanglab-intel")).unwrap();
    assert!(
        !elf_has_interpreter(&binary),
        "the binary names a program interpreter: it is not static"
    );
    let state = std::fs::metadata(img.root.join(STATE_DIR)).unwrap();
    assert_eq!((state.uid(), state.gid()), (65532, 65532));
    let passwd = std::fs::read_to_string(img.root.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("nonroot:x:65532:65532:"), "{passwd}");
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            list_files(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header (a dynamic loader).
fn elf_has_interpreter(elf: &[u8]) -> bool {
    assert!(elf.len() > 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1);
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

// ---- running the entrypoint ---------------------------------------------------------------

/// One connector instance of the image against its own simulators.
struct Case {
    name: &'static str,
    connector_id: &'static str,
    octi: OpenCtiSim,
    hl: HarfangLabSim,
    env: Vec<(String, String)>,
    /// Scratch files outside the image (connector log, test CA); kept when the case fails.
    dir: PathBuf,
    log: PathBuf,
    helpers: Vec<Child>,
}

impl Drop for Case {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        self.hl.shutdown();
        self.octi.shutdown();
        if std::thread::panicking() {
            eprintln!(
                "{}: connector log kept in {}",
                self.name,
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Case {
    fn new(name: &'static str, connector_id: &'static str) -> Case {
        let img = image();
        let (octi, hl) = start_sims(demo_scenario(), Duration::ZERO);
        for f in ["checkpoint.json", "dead-letters.jsonl"] {
            let _ =
                std::fs::remove_file(img.root.join(STATE_DIR).join(format!("{connector_id}.{f}")));
        }
        let dir = std::env::temp_dir().join(format!("hli-image-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let metrics_port = free_port().to_string();
        let env = [
            ("OPENCTI_TOKEN", "sim-token"),
            ("CONNECTOR_ID", connector_id),
            ("CONNECTOR_LIVE_STREAM_ID", "live"),
            ("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false"),
            ("CONNECTOR_PING_INTERVAL", "1"),
            ("CONNECTOR_LOG_LEVEL", "info"),
            ("CONNECTOR_METRICS_PORT", &metrics_port),
            ("HARFANGLAB_INTEL_TOKEN", "sim-token"),
            ("HARFANGLAB_INTEL_SOURCE_LIST_NAME", "OpenCTI image test"),
            ("HARFANGLAB_INTEL_REMOVE_INDICATOR", "true"),
            ("HARFANGLAB_INTEL_WORKERS", "4"),
            ("HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT", "5"),
            // A zone the root has no database for: timestamps must not depend on it.
            ("TZ", "Asia/Tokyo"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Case {
            name,
            connector_id,
            octi,
            hl,
            env,
            log: dir.join("connector.log"),
            dir,
            helpers: Vec::new(),
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// `chroot` into the image as its user, with the image's environment then the case's.
    fn command(&self, argv: &[String]) -> Command {
        let img = image();
        let mut cmd = Command::new("chroot");
        cmd.arg(format!("--userspec={}", img.user))
            .arg(&img.root)
            .args(argv)
            .env_clear()
            .envs(img.env.iter().map(|(k, v)| (k, v)))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn_entrypoint(&self) -> Child {
        let log = std::fs::File::create(&self.log).unwrap();
        self.command(&image().entrypoint)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chroot (needs root)")
    }

    /// `harfanglab-intel <args>` in the image, to completion.
    fn run(&self, args: &[&str]) -> Output {
        let mut argv = vec!["/harfanglab-intel".to_owned()];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.command(&argv).output().expect("chroot (needs root)")
    }

    fn checkpoint(&self) -> Option<String> {
        let path = image()
            .root
            .join(STATE_DIR)
            .join(format!("{}.checkpoint.json", self.connector_id));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        v["start_from"].as_str().map(str::to_owned)
    }

    fn connector_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The whole life of a container: start, register, apply the scenario, healthy, stop.
    fn run_container(&self) {
        let img = image();
        let last = self.octi.event_ids().last().cloned().unwrap();
        let started = SystemTime::now();
        let mut child = self.spawn_entrypoint();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !at_or_after(self.checkpoint().as_deref(), &last) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{}: the connector exited early ({status}):\n{}",
                    self.name,
                    self.connector_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: the scenario was not applied:\n{}",
                self.name,
                self.connector_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let registered = self.octi.registered();
        assert!(
            registered
                .iter()
                .any(|r| r.to_string().contains(self.connector_id)),
            "{}: not registered: {registered:?}",
            self.name
        );
        crate::support::demo_expected::check_lists(
            &self.hl.ioc_rules(),
            &self.hl.sigma_rules(),
            &self.hl.yara_files(),
        );

        // The image's HEALTHCHECK command, as the runtime runs it (healthy once both ends
        // have answered, which they have).
        let health = &img.healthcheck[1..];
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.command(health).output().unwrap();
            if out.status.success() {
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(said.starts_with("healthy"), "{said}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: healthcheck kept failing: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // The runtime's stop: the image's STOPSIGNAL to the entrypoint.
        let sig = img.stop_signal.trim_start_matches("SIG");
        let sent = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = wait_exit(&mut child, Duration::from_secs(20));
        assert_eq!(
            status.code(),
            Some(0),
            "{}: stop: {status}\n{}",
            self.name,
            self.connector_log()
        );
        let saved = self.checkpoint();
        assert!(at_or_after(saved.as_deref(), &last), "{saved:?} < {last}");
        let file = img
            .root
            .join(STATE_DIR)
            .join(format!("{}.checkpoint.json", self.connector_id));
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65532, 65532),
            "state written by the image's user"
        );
        check_utc_timestamps(&self.connector_log(), started);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every log line starts with an RFC 3339 UTC time of this run, though `TZ` names a zone the
/// root has no data for.
fn check_utc_timestamps(log: &str, started: SystemTime) {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines:\n{log}");
    let slack = Duration::from_secs(5);
    for line in lines {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        assert!(stamp.ends_with('Z'), "not a UTC timestamp: {line}");
        let at = humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            at + slack >= started && at <= SystemTime::now() + slack,
            "timestamp off by hours or more: {line}"
        );
    }
}

// ---- the cases ------------------------------------------------------------------------------

#[test]
#[ignore = "needs the exported image: scripts/test-image.sh runs it"]
fn runs_against_the_simulators_on_127_0_0_1() {
    let mut case = Case::new("ip", "5e1f0c00-0000-4000-8000-000000000001");
    let (octi, hl) = (case.octi.base_url(), case.hl.base_url().to_owned());
    assert!(octi.starts_with("http://127.0.0.1:") && hl.starts_with("http://127.0.0.1:"));
    case.set("OPENCTI_URL", &octi);
    case.set("HARFANGLAB_INTEL_URL", &hl);
    case.run_container();
}

#[test]
#[ignore = "needs the exported image: scripts/test-image.sh runs it"]
fn resolves_names_and_verifies_tls_with_the_ca_file_settings() {
    let img = image();
    let mut case = Case::new("names", "5e1f0c00-0000-4000-8000-000000000002");
    let dns = FakeDns::start(&[("harfanglab.hli.test", Ipv4Addr::LOCALHOST)]);
    let ca = TestCa::create(&case.dir, &["localhost", "harfanglab"]);
    // The CA the operator mounts into the container.
    let ca_dir = img.root.join("etc/hli-test");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&ca.ca_pem, ca_dir.join("ca.pem")).unwrap();
    let (octi_url, hl_url) = (case.octi.base_url(), case.hl.base_url().to_owned());
    let octi_port = tls_front(&mut case, &ca, &octi_url);
    let hl_port = tls_front(&mut case, &ca, &hl_url);
    // OpenCTI by `localhost` (from /etc/hosts), HarfangLab by a short name that only the DNS
    // server knows, with the search domain of resolv.conf.
    case.set("OPENCTI_URL", &format!("https://localhost:{octi_port}"));
    case.set("OPENCTI_SSL_VERIFY", "true");
    case.set(
        "HARFANGLAB_INTEL_URL",
        &format!("https://harfanglab:{hl_port}"),
    );

    // Without a CA file the built-in roots are used: they do not know the test CA.
    let out = case.run(&["check"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("[FAIL] harfanglab") && l.contains("TLS")),
        "{report}"
    );
    assert!(
        dns.asked("harfanglab.hli.test"),
        "the name was not asked of the resolv.conf server: {:?}",
        dns.queries()
    );
    // The image's own bundle loads as a CA file (and does not know the test CA either).
    case.set(
        "HARFANGLAB_INTEL_CA_FILE",
        "/etc/ssl/certs/ca-certificates.crt",
    );
    let out = case.run(&["check"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("[ok  ] harfanglab ca file"), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("[FAIL] harfanglab") && l.contains("TLS")),
        "{report}"
    );

    case.set("OPENCTI_CA_FILE", "/etc/hli-test/ca.pem");
    case.set("HARFANGLAB_INTEL_CA_FILE", "/etc/hli-test/ca.pem");
    let out = case.run(&["check"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    case.run_container();
}

/// A TLS endpoint (socat, the test CA's certificate) in front of `upstream`; returns its port.
fn tls_front(case: &mut Case, ca: &TestCa, upstream: &str) -> u16 {
    let port = free_port();
    let target = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            ca.leaf_pem.display(),
            ca.leaf_key.display()
        ))
        .arg(format!("TCP:{target}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (apt-get install socat)");
    case.helpers.push(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "socat did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// A throw-away CA and a server certificate for `names`, made with the openssl command.
struct TestCa {
    ca_pem: PathBuf,
    leaf_pem: PathBuf,
    leaf_key: PathBuf,
}

impl TestCa {
    fn create(dir: &Path, names: &[&str]) -> TestCa {
        let p = |f: &str| dir.join(f);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=hli image test CA",
                ],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            p("leaf.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .unwrap();
        openssl(
            &[
                &["req", "-subj", "/CN=hli image test server"],
                &ec[..],
                &["-keyout", "leaf.key", "-out", "leaf.csr"],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ]);
        TestCa {
            ca_pem: p("ca.pem"),
            leaf_pem: p("leaf.pem"),
            leaf_key: p("leaf.key"),
        }
    }
}

/// A DNS server on [`RUNTIME_DNS`] answering A queries for its names (NXDOMAIN for others, no
/// records for other types), like a runtime's embedded server; it records what it was asked.
struct FakeDns {
    stop: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    fn start(names: &[(&str, Ipv4Addr)]) -> FakeDns {
        let addr: SocketAddr = RUNTIME_DNS.parse().unwrap();
        let socket = UdpSocket::bind(addr).unwrap_or_else(|e| {
            panic!("bind {addr} for the fake DNS server ({e}): run in a fresh network namespace as root (scripts/test-image.sh does)")
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let names: HashMap<String, Ipv4Addr> =
            names.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (s, q) = (stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, qtype, reply)) = dns_answer(&buf[..n], &names) {
                    q.lock().unwrap().push((name, qtype));
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        FakeDns {
            stop,
            queries,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> Vec<(String, u16)> {
        self.queries.lock().unwrap().clone()
    }

    fn asked(&self, name: &str) -> bool {
        self.queries().iter().any(|(n, t)| n == name && *t == 1)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one DNS query (RFC 1035 §4.1): the question's name and type, and the message.
fn dns_answer(query: &[u8], names: &HashMap<String, Ipv4Addr>) -> Option<(String, u16, Vec<u8>)> {
    let mut labels = Vec::new();
    let mut i = 12;
    while *query.get(i)? != 0 {
        let len = usize::from(query[i]);
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let end = i + 5; // the root label, QTYPE, QCLASS
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    query.get(end - 1)?;
    let name = labels.join(".");
    let addr = names.get(&name);
    let answers = u16::from(addr.is_some() && qtype == 1);
    let rcode = if addr.is_some() { 0 } else { 3 };
    let mut reply = Vec::with_capacity(end + 16);
    reply.extend_from_slice(&query[0..2]); // id
    reply.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes()); // response, RD, RA
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&answers.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..end]);
    if let (Some(a), 1) = (addr, answers) {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        reply.extend_from_slice(&a.octets());
    }
    Some((name, qtype, reply))
}
