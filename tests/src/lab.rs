//! The lab as a test fixture: one lab per test at a time (a process-wide
//! lock; cargo runs test binaries one after another), a private meshctl
//! config file, and `lab down` when the test ends, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::{bin, skip_netns};

/// Where `meshctl lab` keeps its state.
pub const STATE_DIR: &str = "/run/probemesh/lab";

static LAB: Mutex<()> = Mutex::new(());

/// Holds the lab for one test.
#[derive(Debug)]
pub struct Lab {
    _lock: MutexGuard<'static, ()>,
    config_dir: tempfile::TempDir,
}

/// stdout and stderr of a finished command, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Lab {
    /// Takes the lab, starting from nothing (a `lab down` first). `None` when
    /// `MESH_SKIP_NETNS=1` asks to skip; otherwise fails loudly without root.
    pub fn take() -> Option<Lab> {
        if skip_netns() {
            eprintln!("MESH_SKIP_NETNS=1: skipping a lab test");
            return None;
        }
        let lock = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(
            nix_is_root(),
            "lab tests need root (network namespaces); run them as root or set MESH_SKIP_NETNS=1"
        );
        let lab = Lab {
            _lock: lock,
            config_dir: tempfile::tempdir().expect("tempdir"),
        };
        let out = lab.meshctl(&["lab", "down"]);
        assert!(
            out.status.success(),
            "initial lab down failed: {}",
            text(&out)
        );
        Some(lab)
    }

    /// Takes the lab and brings it up.
    pub fn up() -> Option<Lab> {
        Self::up_with(&[])
    }

    /// Takes the lab and brings it up with these `lab up` options
    /// (`--proxy-mode nftables`).
    pub fn up_with(options: &[&str]) -> Option<Lab> {
        let lab = Self::take()?;
        lab.bring_up_with(options);
        Some(lab)
    }

    /// This test's meshctl config file (written by `lab up`).
    pub fn config(&self) -> PathBuf {
        self.config_dir.path().join("meshctl.json")
    }

    /// Runs meshctl with this test's config file.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running meshctl")
    }

    /// meshctl with this test's config file, to adjust before running
    /// (e.g. a working directory for files it writes).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("meshctl"));
        cmd.args(args)
            .env("MESH_CONFIG", self.config())
            .env_remove("MESH_COORDINATOR")
            .env_remove("MESH_TLS_DIR")
            .env_remove("MESH_IDENTITY")
            .env_remove("MESH_OUTPUT")
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// Runs meshctl with `-o json` and parses stdout, asserting the exit code.
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let out = self.meshctl(&full);
        assert_eq!(
            out.status.code(),
            Some(code),
            "meshctl {args:?}: {}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("meshctl {args:?} is not JSON ({e}): {}", text(&out)))
    }

    /// `lab up`, asserting success; returns the bring-up time it printed.
    pub fn bring_up(&self) -> Duration {
        self.bring_up_with(&[])
    }

    /// `lab up OPTIONS…`, asserting success; returns the bring-up time it
    /// printed.
    pub fn bring_up_with(&self, options: &[&str]) -> Duration {
        let mut args = vec!["lab", "up"];
        args.extend_from_slice(options);
        let out = self.meshctl(&args);
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let secs: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("lab up in "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("lab up printed no bring-up time:\n{stdout}"));
        eprintln!("lab bring-up time: {secs:.2} s");
        Duration::from_secs_f64(secs)
    }

    /// Injects a fault of the catalogue.
    pub fn fault(&self, name: &str) {
        let out = self.meshctl(&["lab", "fault", name]);
        assert!(
            out.status.success(),
            "lab fault {name} failed:\n{}",
            text(&out)
        );
    }

    /// Undoes the active fault.
    pub fn clear(&self) {
        let out = self.meshctl(&["lab", "clear"]);
        assert!(out.status.success(), "lab clear failed:\n{}", text(&out));
    }

    /// A fault's catalogue entry: the `meshctl probe` that diagnoses it
    /// and the verdict expected (`lab fault --list`, or for a composed
    /// fault `lab fault compose NAME --dry-run`, whose entry has the same
    /// shape).
    pub fn fault_entry(&self, name: &str) -> FaultEntry {
        let list = self.json(&["lab", "fault", "--list"], 0);
        let listed = list
            .as_array()
            .expect("a list of faults")
            .iter()
            .find(|f| f["name"] == name)
            .cloned();
        let f =
            listed.unwrap_or_else(|| self.json(&["lab", "fault", "compose", name, "--dry-run"], 0));
        let s = |v: &Value| v.as_str().map(str::to_owned);
        FaultEntry {
            from: s(&f["probe"]["from"]).expect("from"),
            to: s(&f["probe"]["to"]).expect("to"),
            size: f["probe"]["size"].to_string(),
            class: s(&f["expect"]["class"]).expect("class"),
            cause: s(&f["expect"]["cause"]),
        }
    }

    /// `lab status -o json`.
    pub fn status(&self) -> Value {
        let out = self.meshctl(&["lab", "status", "-o", "json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}):\n{}", text(&out)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.meshctl(&["lab", "down"]);
        if !out.status.success() {
            eprintln!("lab down after the test failed:\n{}", text(&out));
        }
    }
}

/// One fault of the catalogue: its probe command and expected verdict.
#[derive(Debug, Clone)]
pub struct FaultEntry {
    /// `meshctl probe --from`.
    pub from: String,
    /// `--to`.
    pub to: String,
    /// `--size`.
    pub size: String,
    /// The verdict class expected with the fault in.
    pub class: String,
    /// Its cause, for classes that have causes.
    pub cause: Option<String>,
}

/// Runs `script` with `bash -c` (for `/dev/tcp`) inside namespace `ns`;
/// true when it exits 0.
pub fn in_ns(ns: &str, script: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "bash", "-c", script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Output of `cmd` run inside namespace `ns`.
pub fn ns_output(ns: &str, cmd: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("ip netns exec")
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// `kubectl --kubeconfig LAB ARGS` against the lab's Kubernetes API, with
/// `stdin` fed to it when given.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(crate::kubectl());
    cmd.arg("--kubeconfig")
        .arg(Path::new(STATE_DIR).join("kube/admin.kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run kubectl");
    let mut input = child.stdin.take().expect("kubectl stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write to kubectl");
    drop(input);
    child.wait_with_output().expect("kubectl output")
}

/// [`kubectl`] with `-o json`-style output, asserting success.
pub fn kubectl_json(args: &[&str]) -> Value {
    let out = kubectl(args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl printed JSON")
}
