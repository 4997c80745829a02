//! Shared harness for the end-to-end tests: where the built binaries are,
//! child processes that die with the test, bounded waits, and a small mesh
//! (certificates + coordinator + probes) on loopback.

pub mod etcd;
pub mod html;
pub mod lab;
pub mod matrix;
pub mod sim;
pub mod verdict;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`meshctl`, `mesh-coordinator`, `mesh-probe`)
/// built by `cargo build --bins` into the same profile directory as this test.
///
/// Panics with the way out when the binary is missing: the test command
/// builds the binaries before running the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// The pinned kubectl of `scripts/kube-tools.sh` (installed on first use);
/// panics, never skips, when it cannot be had.
pub fn kubectl() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: a real kubectl is required for this test",
        script.display()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kubectl")
}

/// True when the caller explicitly asked to skip tests that need root and
/// network namespaces (`MESH_SKIP_NETNS=1`). Such tests otherwise run and
/// fail loudly when they cannot.
pub fn skip_netns() -> bool {
    std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1")
}

/// A current-thread runtime for a test's async calls (gRPC clients, etcd).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`
/// naming `what` was awaited.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (by its PID, which we started) when dropped, with
/// its stderr collected for assertions.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `cmd` with stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stderr,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        wait_for(&format!("{} to log {needle:?}", self.name), limit, || {
            let s = self.stderr();
            s.contains(needle).then_some(s)
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_for(&format!("{} to exit", self.name), limit, || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly on SIGKILL's
        // reaping; SIGKILL works on stopped processes, so just kill.
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS will not hand it
/// out again immediately).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Runs a workspace binary to completion.
pub fn run(name: &str, args: &[&str]) -> Output {
    command(name, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// The command [`run`] runs, to spawn instead (a run left going while the
/// test does something else): the environment's MESH_* settings and
/// meshctl's saved configuration do not apply.
pub fn command(name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("MESH_COORDINATOR")
        .env_remove("MESH_TLS_DIR")
        .env_remove("MESH_IDENTITY")
        .env("MESH_CONFIG", "/nonexistent/probemesh-test-config.json");
    cmd
}

/// stdout of a finished command, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Which coordinator holds each connected probe, read from the output of
/// `meshctl probes -o json` (empty when that call failed).
pub fn holders(probes: &Output) -> BTreeMap<String, String> {
    if probes.status.code() != Some(0) {
        return BTreeMap::new();
    }
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&probes.stdout).unwrap_or_default();
    listed
        .into_iter()
        .filter(|p| p["connected"] == true)
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                p["coordinator"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Asserts the command exited with `code`, showing its output if not.
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A coordinator on loopback with a fresh CA, and the probes started on it.
#[derive(Debug)]
pub struct Mesh {
    /// Holds ca.pem, admin.pem and every issued certificate.
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The coordinator process.
    pub coordinator: Daemon,
    /// Probes by name.
    pub probes: Vec<(String, Daemon)>,
    /// The coordinator's arguments, to start it again on the same ports
    /// ([`Mesh::restart_coordinator`]).
    pub coordinator_args: Vec<String>,
}

/// `meshctl` arguments of the cheapest run a test mesh can make: one echo
/// from `node-a` to loopback, as JSON.
pub const ONE_ECHO: &[&str] = &[
    "ping",
    "--from",
    "node-a",
    "127.0.0.1",
    "-c",
    "1",
    "-o",
    "json",
];

/// Heartbeat used by test meshes: disconnects show within 3 × this.
pub const TEST_HEARTBEAT: Duration = Duration::from_millis(300);

impl Mesh {
    /// Certificates + a coordinator (heartbeat [`TEST_HEARTBEAT`], runs and
    /// tokens stored in the temp dir).
    pub fn start() -> Self {
        Self::start_storing_in(None, |_| {}, &[])
    }

    /// [`Mesh::start`] with more coordinator arguments (e.g. `--metrics
    /// 127.0.0.1:PORT`, `--policy FILE`), kept for [`Mesh::restart_coordinator`].
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_storing_in(None, |_| {}, extra)
    }

    /// [`Mesh::start`] with runs and tokens stored in `store`.
    pub fn start_with_store(store: PathBuf) -> Self {
        Self::start_storing_in(Some(store), |_| {}, &[])
    }

    /// [`Mesh::start`] with the state in etcd at `endpoints` (`--etcd`,
    /// comma-separated) instead of a store directory.
    pub fn start_on_etcd(endpoints: &str) -> Self {
        Self::start_storing_in(None, |_| {}, &["--etcd", endpoints])
    }

    /// Starts another coordinator like this one (same CA and arguments,
    /// its own port): with `--etcd` they share the state. Returns it and
    /// its URL.
    pub fn start_another_coordinator(&self) -> (Daemon, String) {
        let port = free_port();
        let mut args = self.coordinator_args.clone();
        let listen = args
            .iter()
            .position(|a| a == "--listen")
            .expect("coordinator arguments hold --listen");
        args[listen + 1] = format!("127.0.0.1:{port}");
        (
            spawn_coordinator(&args),
            format!("https://127.0.0.1:{port}"),
        )
    }

    /// As [`Mesh::start`], with `prepare` filling the store directory
    /// (created empty) before the coordinator starts.
    pub fn start_prepared(prepare: impl FnOnce(&Path)) -> Self {
        Self::start_storing_in(None, prepare, &[])
    }

    fn start_storing_in(
        store: Option<PathBuf>,
        prepare: impl FnOnce(&Path),
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_str().expect("utf-8 temp path").to_owned();
        assert_exit(
            &run("meshctl", &["certs", "init", "--dir", &d]),
            0,
            "certs init",
        );
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let heartbeat = format!("{}ms", TEST_HEARTBEAT.as_millis());
        let mut coordinator_args: Vec<String> = [
            "--listen",
            &listen,
            "--tls-dir",
            &d,
            "--heartbeat",
            &heartbeat,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // The state: in etcd when the caller says so, else a store directory.
        if !extra.contains(&"--etcd") {
            let store = store.unwrap_or_else(|| dir.path().join("store"));
            std::fs::create_dir_all(&store).expect("store dir");
            prepare(&store);
            let store = store.to_str().expect("utf-8 store path");
            coordinator_args.extend(["--store".to_owned(), store.to_owned()]);
        }
        coordinator_args.extend(extra.iter().map(|s| (*s).to_owned()));
        let coordinator = spawn_coordinator(&coordinator_args);
        Self {
            dir,
            url: format!("https://{listen}"),
            coordinator,
            probes: Vec::new(),
            coordinator_args,
        }
    }

    /// Kills the coordinator with SIGKILL while a long ping from `node-a`
    /// is recorded `running`, checks meshctl does not report the cut run as
    /// a success, restarts the coordinator, and returns the run's id.
    pub fn kill_coordinator_mid_run(&mut self) -> String {
        let cmd = self.meshctl_command(
            "admin",
            &[
                "ping",
                "--from",
                "node-a",
                "127.0.0.1",
                "-c",
                "600",
                "-i",
                "100ms",
            ],
        );
        let mut long = Daemon::spawn("meshctl ping (long)", cmd);
        let running = wait_for(
            "the long ping recorded running",
            Duration::from_secs(10),
            || {
                let out = self.meshctl(&["runs", "-o", "json"]);
                let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
                runs.into_iter().find(|r| r["state"] == "running")
            },
        );
        let id = running["run_id"].as_str().expect("run_id").to_owned();
        self.coordinator.signal("KILL");
        self.coordinator.wait_exit(Duration::from_secs(5));
        assert!(
            !long.wait_exit(Duration::from_secs(10)).success(),
            "meshctl must not report a cut run as a success"
        );
        self.restart_coordinator();
        id
    }

    /// Starts the coordinator again with the same arguments (the same
    /// ports, store and TLS directory), in place of the one that exited
    /// or was killed.
    pub fn restart_coordinator(&mut self) {
        self.coordinator.kill();
        self.coordinator = spawn_coordinator(&self.coordinator_args);
    }

    /// The TLS directory, as a string for arguments.
    pub fn tls_dir(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// Issues a certificate `name` with `role` into the TLS directory.
    pub fn issue(&self, name: &str, role: &str) {
        let out = run(
            "meshctl",
            &[
                "certs",
                "issue",
                "--dir",
                self.tls_dir(),
                "--name",
                name,
                "--role",
                role,
            ],
        );
        assert_exit(&out, 0, "certs issue");
    }

    /// Issues a probe certificate and starts the probe.
    pub fn start_probe(&mut self, name: &str) {
        self.issue(name, "probe");
        let daemon = self.spawn_probe(name, self.tls_dir().to_owned());
        self.probes.push((name.to_owned(), daemon));
    }

    /// Starts a probe process with the certificates in `tls_dir`.
    pub fn spawn_probe(&self, name: &str, tls_dir: String) -> Daemon {
        let mut cmd = Command::new(bin("mesh-probe"));
        cmd.args([
            "--name",
            name,
            "--coordinator",
            &self.url,
            "--tls-dir",
            &tls_dir,
        ]);
        Daemon::spawn(&format!("mesh-probe {name}"), cmd)
    }

    /// The probe process named `name`.
    pub fn probe(&mut self, name: &str) -> &mut Daemon {
        &mut self
            .probes
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no probe {name} started"))
            .1
    }

    /// Runs meshctl against this mesh as `identity`.
    pub fn meshctl_as(&self, identity: &str, args: &[&str]) -> Output {
        self.meshctl_command(identity, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run meshctl: {e}"))
    }

    /// A join token for probe `name`, valid for `ttl` (e.g. `1h`).
    pub fn join_token(&self, name: &str, ttl: &str) -> String {
        let out = self.meshctl(&["join-token", "create", "--name", name, "--ttl", ttl]);
        assert_exit(&out, 0, "join-token create");
        stdout(&out).trim().to_owned()
    }

    /// `mesh-probe join --enroll-only` with `token` into `dir`: enrolls and
    /// exits without attaching.
    pub fn enroll(&self, token: &str, dir: &Path) -> Output {
        run(
            "mesh-probe",
            &[
                "join",
                "--enroll-only",
                "--coordinator",
                &self.url,
                "--token",
                token,
                "--tls-dir",
                dir.to_str().expect("utf-8 directory"),
            ],
        )
    }

    /// The meshctl command [`Mesh::meshctl_as`] runs, to spawn instead.
    pub fn meshctl_command(&self, identity: &str, args: &[&str]) -> Command {
        let mut full = vec![
            "--coordinator",
            &self.url,
            "--tls-dir",
            self.tls_dir(),
            "--identity",
            identity,
        ];
        full.extend_from_slice(args);
        command("meshctl", &full)
    }

    /// Runs meshctl against this mesh as the operator `admin`.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.meshctl_as("admin", args)
    }

    /// `meshctl probes -o json`, parsed.
    pub fn probes_json(&self) -> Vec<serde_json::Value> {
        let out = self.meshctl(&["probes", "-o", "json"]);
        assert_exit(&out, 0, "meshctl probes");
        serde_json::from_slice(&out.stdout).expect("meshctl probes -o json is JSON")
    }

    /// Waits until probe `name` shows `connected == want`.
    pub fn wait_connected(&self, name: &str, want: bool, limit: Duration) -> serde_json::Value {
        wait_for(&format!("probe {name} connected={want}"), limit, || {
            self.probes_json()
                .into_iter()
                .find(|p| p["name"] == name && p["connected"] == want)
        })
    }
}

/// Starts `mesh-coordinator ARGS` and waits until it serves.
fn spawn_coordinator(args: &[String]) -> Daemon {
    let mut cmd = Command::new(bin("mesh-coordinator"));
    cmd.args(args);
    let coordinator = Daemon::spawn("mesh-coordinator", cmd);
    coordinator.wait_for_log("coordinator serving", Duration::from_secs(10));
    coordinator
}

/// Copies `file` from one TLS dir into another.
pub fn copy_into(from: &Path, to: &Path, file: &str) {
    std::fs::copy(from.join(file), to.join(file)).unwrap_or_else(|e| panic!("copy {file}: {e}"));
}
