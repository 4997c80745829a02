//! Observability end to end, against real tools: one OpenTelemetry trace per
//! run across the coordinator and two probes, received by a real collector
//! (rotel); runs that do not slow down when the collector is gone, with the
//! loss counted; `/metrics` that promtool accepts and a real Prometheus
//! scrapes; `/readyz` that follows a probe's link. Everything listens on 127.0.0.1 and every process started here
//! is killed by its PID when the test ends.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use probemesh_tests::{
    Daemon, Mesh, TEST_HEARTBEAT, assert_exit, bin, free_port, run, stdout, wait_for,
};

/// Batch span export every 200 ms instead of 5 s, so tests wait less.
const FAST_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "200");

/// A coordinator with `extra` arguments and `env`, like [`Mesh::start`].
fn start_mesh(extra: &[String], env: &[(&str, &str)]) -> Mesh {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().expect("utf-8 temp path").to_owned();
    assert_exit(
        &run("meshctl", &["certs", "init", "--dir", &d]),
        0,
        "certs init",
    );
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut cmd = Command::new(bin("mesh-coordinator"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--tls-dir", &d])
        .args(["--heartbeat", &format!("{}ms", TEST_HEARTBEAT.as_millis())])
        .args(extra)
        .envs(env.iter().copied());
    let coordinator_args = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let coordinator = Daemon::spawn("mesh-coordinator", cmd);
    coordinator.wait_for_log("coordinator serving", Duration::from_secs(10));
    Mesh {
        dir,
        url,
        coordinator,
        probes: Vec::new(),
        coordinator_args,
    }
}

/// Issues a certificate for probe `name` and starts it with `extra`
/// arguments and `env`.
fn start_probe(mesh: &mut Mesh, name: &str, extra: &[String], env: &[(&str, &str)]) {
    mesh.issue(name, "probe");
    let mut cmd = Command::new(bin("mesh-probe"));
    cmd.args(["--name", name, "--coordinator", &mesh.url])
        .args(["--tls-dir", mesh.tls_dir()])
        .args(extra)
        .envs(env.iter().copied());
    let daemon = Daemon::spawn(&format!("mesh-probe {name}"), cmd);
    mesh.probes.push((name.to_owned(), daemon));
    mesh.wait_connected(name, true, Duration::from_secs(10));
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `meshctl ARGS -o json` run to success, parsed.
fn meshctl_json(mesh: &Mesh, list: &[&str], what: &str) -> serde_json::Value {
    let mut full = list.to_vec();
    full.extend(["-o", "json"]);
    let out = mesh.meshctl(&full);
    assert_exit(&out, 0, what);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: -o json is not JSON ({e}):\n{}", stdout(&out)))
}

// ---------------------------------------------------------------- rotel --

/// rotel-agent, installed by scripts/rotel.sh; panics (never skips) when it
/// cannot be had.
fn rotel_agent() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rotel.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: a real OTLP collector is required for this test",
        script.display()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A rotel collector on loopback printing every span it receives. Its
/// stdout is sent to stderr (`exec ... 1>&2` keeps the PID) so [`Daemon`]
/// collects it.
fn start_rotel(grpc_port: u16) -> Daemon {
    let agent = rotel_agent();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec \"$0\" \"$@\" 1>&2"])
        .arg(agent)
        .args(["start", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--exporter", "blackhole", "--debug-log", "traces"])
        .args(["--debug-log-verbosity", "detailed"]);
    let rotel = Daemon::spawn("rotel-agent", cmd);
    rotel.wait_for_log("Starting Rotel", Duration::from_secs(20));
    // Listening is logged before the gRPC socket is up; wait for the port.
    wait_for("rotel's OTLP/gRPC port", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", grpc_port)).ok()
    });
    rotel
}

/// One span as rotel's detailed debug log prints it.
#[derive(Debug, Clone, Default)]
struct SpanSeen {
    trace_id: String,
    parent_id: String,
    span_id: String,
    name: String,
    attributes: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

/// Parses rotel's `--debug-log traces --debug-log-verbosity detailed`
/// output: `ResourceSpans #` blocks with `Resource attributes:`, then
/// `Span #` blocks with `Trace ID`, `Parent ID`, `ID`, `Name` and
/// `Attributes:` (`-> key: Str(value)`); events and the rest are skipped.
fn parse_rotel(log: &str) -> Vec<SpanSeen> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Resource,
        SpanHeader,
        SpanAttributes,
    }
    let mut spans: Vec<SpanSeen> = Vec::new();
    let mut resource = BTreeMap::new();
    let mut section = Section::Other;
    for line in log.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("ResourceSpans #") {
            resource = BTreeMap::new();
            section = Section::Other;
        } else if trimmed == "Resource attributes:" {
            section = Section::Resource;
        } else if trimmed.starts_with("ScopeSpans #") {
            section = Section::Other;
        } else if trimmed.starts_with("Span #") {
            spans.push(SpanSeen {
                resource: resource.clone(),
                ..SpanSeen::default()
            });
            section = Section::SpanHeader;
        } else if trimmed == "Attributes:" && section == Section::SpanHeader {
            section = Section::SpanAttributes;
        } else if trimmed.starts_with("Events:") || trimmed.starts_with("Links:") {
            section = Section::Other;
        } else if let Some(kv) = trimmed.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            let v = v
                .split_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .unwrap_or(v)
                .to_owned();
            match section {
                Section::Resource => {
                    resource.insert(k.to_owned(), v);
                }
                Section::SpanAttributes => {
                    if let Some(s) = spans.last_mut() {
                        s.attributes.insert(k.to_owned(), v);
                    }
                }
                _ => {}
            }
        } else if section == Section::SpanHeader
            && let (Some((k, v)), Some(s)) = (trimmed.split_once(':'), spans.last_mut())
        {
            let v = v.trim().to_owned();
            match k.trim() {
                "Trace ID" => s.trace_id = v,
                "Parent ID" => s.parent_id = v,
                "ID" => s.span_id = v,
                "Name" => s.name = v,
                _ => {}
            }
        }
    }
    spans
}

fn service(s: &SpanSeen) -> &str {
    s.resource.get("service.name").map_or("", String::as_str)
}

fn probe_name(s: &SpanSeen) -> &str {
    s.resource
        .get("probemesh.probe.name")
        .map_or("", String::as_str)
}

/// Checks one run's trace: a single `probemesh.run` root from the
/// coordinator, every other span's parent inside the trace, and a
/// `probe.task` span from each of `probes`, each the child of a coordinator
/// span. Returns `None` (to wait longer) while spans are missing.
fn check_trace(spans: &[SpanSeen], trace_id: &str, run_id: &str, probes: &[&str]) -> Option<()> {
    let in_trace: Vec<&SpanSeen> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let root = in_trace.iter().find(|s| s.name == "probemesh.run")?;
    let coordinator_ids: HashSet<&str> = in_trace
        .iter()
        .filter(|s| service(s) == "mesh-coordinator")
        .map(|s| s.span_id.as_str())
        .collect();
    let tasks: Vec<&&SpanSeen> = in_trace
        .iter()
        .filter(|s| s.name == "probe.task" && service(s) == "mesh-probe")
        .collect();
    if !probes
        .iter()
        .all(|p| tasks.iter().any(|t| probe_name(t) == *p))
    {
        return None;
    }
    assert_eq!(service(root), "mesh-coordinator", "root span: {root:?}");
    assert_eq!(root.parent_id, "", "the run span is the root: {root:?}");
    assert_eq!(
        root.attributes.get("run_id").map(String::as_str),
        Some(run_id)
    );
    for key in ["requester", "from", "target", "kind"] {
        assert!(
            root.attributes.contains_key(key),
            "run span lacks {key}: {root:?}"
        );
    }
    for t in &tasks {
        assert!(
            coordinator_ids.contains(t.parent_id.as_str()),
            "probe.task of {} has parent {} which is no coordinator span of trace {trace_id}",
            probe_name(t),
            t.parent_id
        );
        assert_eq!(t.attributes.get("run_id").map(String::as_str), Some(run_id));
    }
    let ids: HashSet<&str> = in_trace.iter().map(|s| s.span_id.as_str()).collect();
    for s in &in_trace {
        assert!(
            s.parent_id.is_empty() || ids.contains(s.parent_id.as_str()),
            "span {} ({}) points at a parent outside the trace: {s:?}",
            s.name,
            service(s)
        );
    }
    Some(())
}

#[test]
fn one_trace_per_run_across_coordinator_and_probes() {
    let otlp_port = free_port();
    let rotel = start_rotel(otlp_port);
    let endpoint = format!("http://127.0.0.1:{otlp_port}");
    let otel = args(&["--otlp-endpoint", &endpoint, "--log-json"]);
    let mut mesh = start_mesh(&otel, &[FAST_EXPORT]);
    start_probe(&mut mesh, "node-a", &otel, &[FAST_EXPORT]);
    start_probe(&mut mesh, "node-b", &otel, &[FAST_EXPORT]);

    let ping = meshctl_json(
        &mesh,
        &["ping", "--from", "node-a", "127.0.0.1", "-c", "2"],
        "ping",
    );
    // A transfer to probe:node-b first starts node-b's responder: two probes
    // work in one run.
    let transfer = meshctl_json(
        &mesh,
        &["transfer", "--from", "node-a", "probe:node-b"],
        "transfer",
    );
    let id = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let (ping_trace, ping_run) = (id(&ping, "trace_id"), id(&ping, "run_id"));
    let (xfer_trace, xfer_run) = (id(&transfer, "trace_id"), id(&transfer, "run_id"));
    for t in [&ping_trace, &xfer_trace] {
        assert!(
            t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit()),
            "trace id {t:?}"
        );
    }
    assert_ne!(ping_trace, xfer_trace, "one trace per run");

    let spans = wait_for(
        "rotel to receive both runs' spans from the coordinator, node-a and node-b",
        Duration::from_secs(30),
        || {
            let spans = parse_rotel(&rotel.stderr());
            check_trace(&spans, &ping_trace, &ping_run, &["node-a"])?;
            check_trace(&spans, &xfer_trace, &xfer_run, &["node-a", "node-b"])?;
            Some(spans)
        },
    );
    let responder = spans
        .iter()
        .find(|s| s.trace_id == xfer_trace && probe_name(s) == "node-b")
        .expect("node-b's span");
    assert_eq!(
        responder.attributes.get("kind").map(String::as_str),
        Some("responder")
    );
    for key in ["host.name", "k8s.node.name"] {
        assert!(responder.resource.contains_key(key), "{key}: {responder:?}");
    }
    let phases: HashSet<&str> = spans
        .iter()
        .filter(|s| s.trace_id == xfer_trace && service(s) == "mesh-coordinator")
        .map(|s| s.name.as_str())
        .collect();
    for phase in [
        "probemesh.plan",
        "probemesh.responder",
        "probemesh.dispatch",
        "probemesh.await",
        "probemesh.store",
    ] {
        assert!(phases.contains(phase), "no {phase} span in {phases:?}");
    }
    eprintln!(
        "rotel received {} spans; ping trace {ping_trace}, transfer trace {xfer_trace}",
        spans.len()
    );

    // JSON logs inside a run carry its run_id and trace_id.
    let coordinator_log = mesh.coordinator.stderr();
    let started = coordinator_log
        .lines()
        .find(|l| l.contains("run started") && l.contains(&xfer_run))
        .expect("a JSON 'run started' line");
    let line: serde_json::Value = serde_json::from_str(started).expect("JSON log line");
    assert_eq!(line["span"]["run_id"], xfer_run.as_str());
    assert_eq!(line["span"]["trace_id"], xfer_trace.as_str());
    let node_b = mesh.probe("node-b").stderr();
    let ready = node_b
        .lines()
        .find(|l| l.contains("responder ready"))
        .expect("node-b logs its responder");
    let line: serde_json::Value = serde_json::from_str(ready).expect("JSON log line");
    assert_eq!(line["span"]["run_id"], xfer_run.as_str());
    assert_eq!(line["span"]["trace_id"], xfer_trace.as_str());
}

// --------------------------------------------------------- no collector --

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed_ping(mesh: &Mesh) -> Duration {
    let start = Instant::now();
    let out = mesh.meshctl(&["ping", "--from", "node-a", "127.0.0.1", "-c", "1"]);
    let took = start.elapsed();
    assert_exit(&out, 0, "ping -c 1");
    took
}

/// The value of the series starting with `series` in a text exposition.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_missing_or_silent_collector_costs_no_time_and_is_counted() {
    // The probe exports to a port nobody listens on (connection refused);
    // the coordinator to a socket that completes TCP handshakes in the
    // kernel but is never accepted nor answered (a hung collector), so each
    // export runs into its timeout.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent collector");
    let silent_url = format!(
        "http://{}",
        silent.local_addr().expect("silent collector address")
    );
    let metrics_port = free_port();
    let env = [FAST_EXPORT, ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")];
    let mut plain = start_mesh(&[], &[]);
    start_probe(&mut plain, "node-a", &[], &[]);
    let dark_args = args(&[
        "--otlp-endpoint",
        &silent_url,
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let mut dark = start_mesh(&dark_args, &env);
    start_probe(
        &mut dark,
        "node-a",
        &args(&["--otlp-endpoint", &closed]),
        &env,
    );

    // Alternate the two meshes so both see the same machine load.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        without.push(timed_ping(&plain));
        with.push(timed_ping(&dark));
    }
    let (m_without, m_with) = (median(without), median(with));
    eprintln!(
        "median ping -c 1: {m_without:?} without a collector endpoint, {m_with:?} with a silent or dead one"
    );
    assert!(
        m_with < m_without * 2 + Duration::from_millis(200),
        "a silent or dead collector slowed runs: median {m_with:?} vs {m_without:?}"
    );

    let failed = wait_for(
        "probemesh_otel_spans_dropped_total to count the failed exports",
        Duration::from_secs(30),
        || {
            let body = http_get(metrics_port, "/metrics")?;
            sample(
                &body,
                "probemesh_otel_spans_dropped_total{reason=\"export_failed\"}",
            )
            .filter(|v| *v > 0.0)
        },
    );
    eprintln!("coordinator spans dropped after failed exports: {failed}");
    dark.coordinator.wait_for_log(
        "span export to the OTLP collector failed",
        Duration::from_secs(5),
    );
    dark.probe("node-a").wait_for_log(
        "span export to the OTLP collector failed",
        Duration::from_secs(10),
    );
    drop(silent);
}

// ------------------------------------------------------------- metrics --

/// `GET path` on 127.0.0.1:port over HTTP/1.0; the body on a 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    http_status(port, path).and_then(|(status, body)| (status == 200).then_some(body))
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0; the status code and body.
fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes a PromQL query for a URL.
fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asks Prometheus for an instant query; the single result's value.
fn prometheus_value(port: u16, query: &str) -> Option<String> {
    let body = http_get(
        port,
        &format!("/api/v1/query?query={}", encode_query(query)),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str().map(str::to_owned),
        _ => None,
    }
}

fn promtool_check(body: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus, see scripts/deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics rejects the {what} metrics:\n{}{}\n--- body\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let (c_port, a_port, b_port) = (free_port(), free_port(), free_port());
    let metrics = |p: u16| args(&["--metrics", &format!("127.0.0.1:{p}")]);
    let mut mesh = start_mesh(&metrics(c_port), &[]);
    start_probe(&mut mesh, "node-a", &metrics(a_port), &[]);
    start_probe(&mut mesh, "node-b", &metrics(b_port), &[]);
    let out = mesh.meshctl(&["ping", "--from", "node-a", "127.0.0.1", "-c", "1"]);
    assert_exit(&out, 0, "ping -c 1");

    let coordinator = wait_for(
        "the coordinator's clock estimates in /metrics",
        Duration::from_secs(10),
        || {
            http_get(c_port, "/metrics")
                .filter(|b| b.contains("probemesh_probe_clock_offset_seconds{probe=\"node-b\"}"))
        },
    );
    promtool_check(&coordinator, "coordinator");
    for series in [
        "probemesh_probes_connected 2",
        "probemesh_runs_total{kind=\"ping\",result=\"completed\"} 1",
        "probemesh_run_duration_seconds_count{kind=\"ping\"} 1",
        "probemesh_task_duration_seconds_count{kind=\"ping\"} 1",
        "probemesh_probe_attaches_total{probe=\"node-a\"} 1",
        "probemesh_probe_clock_error_seconds{probe=\"node-a\"}",
        "probemesh_certificate_expiry_timestamp_seconds{name=\"coordinator\"}",
        "probemesh_tls_handshake_refusals_total 0",
        "probemesh_otel_spans_dropped_total{reason=\"queue_full\"} 0",
    ] {
        assert!(
            coordinator.contains(series),
            "no {series:?} in\n{coordinator}"
        );
    }
    let node_a = http_get(a_port, "/metrics").expect("node-a serves /metrics");
    promtool_check(&node_a, "node-a");
    for series in [
        "probemesh_probe_tasks_total{kind=\"ping\",outcome=\"completed\"} 1",
        "probemesh_probe_task_duration_seconds_count{kind=\"ping\"} 1",
        "probemesh_probe_link_up 1",
        "probemesh_probe_link_attaches_total 1",
        "probemesh_certificate_expiry_timestamp_seconds{name=\"probe\"}",
    ] {
        assert!(node_a.contains(series), "no {series:?} in\n{node_a}");
    }
    assert_eq!(
        http_get(a_port, "/nothing"),
        None,
        "only /metrics, /healthz and /readyz are served"
    );

    // A real Prometheus scraping all three every second.
    let prom_dir = tempfile::tempdir().expect("temp dir");
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             - job_name: coordinator\n  static_configs:\n  - targets: ['127.0.0.1:{c_port}']\n\
             - job_name: probe\n  static_configs:\n  - targets: ['127.0.0.1:{a_port}', '127.0.0.1:{b_port}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let prom_port = free_port();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let prometheus = Daemon::spawn("prometheus", cmd);
    wait_for("Prometheus to be ready", Duration::from_secs(30), || {
        http_get(prom_port, "/-/ready")
    });
    let connected = wait_for(
        "Prometheus to scrape probemesh_probes_connected",
        Duration::from_secs(30),
        || prometheus_value(prom_port, "probemesh_probes_connected"),
    );
    assert_eq!(connected, "2", "{}", prometheus.stderr());
    let probes_up = wait_for(
        "Prometheus to scrape both probes",
        Duration::from_secs(30),
        || prometheus_value(prom_port, "sum(probemesh_probe_link_up)").filter(|v| v == "2"),
    );
    eprintln!(
        "Prometheus: probemesh_probes_connected = {connected}, sum(probemesh_probe_link_up) = {probes_up}"
    );
}

#[test]
fn readyz_follows_the_probe_link_and_healthz_stays_up() {
    let (c_port, a_port) = (free_port(), free_port());
    let metrics = |p: u16| args(&["--metrics", &format!("127.0.0.1:{p}")]);
    let mut mesh = start_mesh(&metrics(c_port), &[]);
    let coordinator_ready = wait_for(
        "the coordinator's /readyz to answer 200",
        Duration::from_secs(10),
        || http_get(c_port, "/readyz"),
    );
    assert_eq!(coordinator_ready, "ok\n");
    start_probe(&mut mesh, "node-a", &metrics(a_port), &[]);
    wait_for(
        "node-a's /readyz to answer 200 once attached",
        Duration::from_secs(10),
        || http_get(a_port, "/readyz"),
    );

    // The coordinator goes away: the probe's stream is down, so is its readiness.
    mesh.coordinator.kill();
    let (status, body) = wait_for(
        "node-a's /readyz to answer 503",
        Duration::from_secs(10),
        || http_status(a_port, "/readyz").filter(|(status, _)| *status == 503),
    );
    assert!(
        body.starts_with("not ready: coordinator: ")
            && body.contains(&mesh.url)
            && body.ends_with('\n')
            && body.lines().count() == 1,
        "one line naming the condition and the coordinator, got {status} {body:?}"
    );
    assert_eq!(
        http_status(a_port, "/healthz"),
        Some((200, "ok\n".to_owned())),
        "alive while not ready"
    );

    // A coordinator on the same address again: the probe reattaches and is ready.
    let d = mesh.tls_dir().to_owned();
    let listen = mesh.url.trim_start_matches("https://").to_owned();
    let mut cmd = Command::new(bin("mesh-coordinator"));
    cmd.args(["--listen", &listen, "--tls-dir", &d])
        .args(["--heartbeat", &format!("{}ms", TEST_HEARTBEAT.as_millis())]);
    mesh.coordinator = Daemon::spawn("mesh-coordinator (again)", cmd);
    wait_for(
        "node-a's /readyz to answer 200 after reattaching",
        Duration::from_secs(20),
        || http_get(a_port, "/readyz"),
    );
}
