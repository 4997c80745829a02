//! The run store end to end, with real processes on loopback and real file
//! systems: a disk that fills up mid-way loses no run that reported success
//! (the others fail with the disk-full message); a damaged record loses only
//! itself; a run in flight when the coordinator is killed shows
//! `interrupted` after a restart; a read-only store is refused at start.
//!
//! The tmpfs parts need root; they fail loudly without it and skip only
//! with `MESH_SKIP_NETNS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use probemesh_tests::{
    Daemon, Mesh, ONE_ECHO, assert_exit, bin, free_port, run, skip_netns, stderr,
};

/// A tmpfs mounted for one test, unmounted when dropped (also on failure).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=1m`); `None` when root
    /// tests are skipped (`MESH_SKIP_NETNS=1`), else panics without root.
    fn mount(options: &str) -> Option<Self> {
        if skip_netns() {
            eprintln!("MESH_SKIP_NETNS=1: skipping a test that mounts a tmpfs");
            return None;
        }
        let uid = Command::new("id").arg("-u").output().expect("id -u runs");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "this test mounts a tmpfs: run it as root (or set MESH_SKIP_NETNS=1 to skip it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "probemesh-test"])
            .arg(&path)
            .status()
            .expect("mount(8) runs");
        assert!(status.success(), "mount -t tmpfs -o {options} failed");
        Some(Self { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Fills the file system holding `path` with a ballast file, then gives
/// back `room` bytes (rounded down to pages by the file system).
fn fill_leaving(path: &Path, room: u64) {
    use std::io::Write as _;
    let mut ballast = std::fs::File::create(path).expect("ballast file");
    let chunk = vec![0u8; 64 * 1024];
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..1024 {
        match ballast.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = ballast.metadata().expect("ballast size").len();
    assert!(
        len > room,
        "the tmpfs is too small for {room} bytes of room"
    );
    ballast.set_len(len - room).expect("give back room");
}

/// `meshctl runs -o json` (every run kept), parsed.
fn runs_json(mesh: &Mesh) -> Vec<serde_json::Value> {
    let out = mesh.meshctl(&["runs", "--limit", "1000", "-o", "json"]);
    assert_exit(&out, 0, "meshctl runs");
    serde_json::from_slice(&out.stdout).expect("meshctl runs -o json is JSON")
}

/// The state `runs` gives run `id`, if listed.
fn state_of(runs: &[serde_json::Value], id: &str) -> Option<String> {
    runs.iter()
        .find(|r| r["run_id"] == id)
        .and_then(|r| r["state"].as_str())
        .map(str::to_owned)
}

/// A mesh storing runs in `store`, with probe `node-a` connected.
fn mesh_with_probe(store: PathBuf) -> Mesh {
    let mut mesh = Mesh::start_with_store(store);
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    mesh
}

/// One cheap run: a single echo to loopback.
fn ping(mesh: &Mesh) -> std::process::Output {
    mesh.meshctl(ONE_ECHO)
}

fn run_id(out: &std::process::Output) -> String {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ping -o json");
    report["run_id"].as_str().expect("run_id").to_owned()
}

#[test]
fn a_disk_filling_up_mid_way_loses_no_run_that_reported_success() {
    const RUNS: usize = 500;
    let Some(disk) = Tmpfs::mount("size=2m") else {
        return;
    };
    let store = disk.path.join("store");
    let mut mesh = mesh_with_probe(store.clone());
    let started = Instant::now();
    let first = ping(&mesh);
    assert_exit(&first, 0, "the first run, with room to spare");
    let mut done = vec![run_id(&first)];
    let per_run = std::fs::metadata(store.join("runs.pb"))
        .expect("runs.pb")
        .len();
    let ballast = disk.path.join("ballast");
    fill_leaving(&ballast, per_run * (RUNS as u64 / 2));

    let (mut refused, mut unrecorded_end) = (0, Vec::new());
    let mut first_failure = None;
    for i in 1..RUNS {
        let out = ping(&mesh);
        if out.status.code() == Some(0) {
            done.push(run_id(&out));
            continue;
        }
        let err = stderr(&out);
        if first_failure.is_none() {
            eprintln!("run {i} failed: {err}");
            first_failure = Some(i);
        }
        assert_exit(&out, 3, "a run whose record cannot be written");
        assert!(
            err.contains("No space left on device")
                && err.contains(&store.join("runs.pb").display().to_string())
                && err.contains("free space there"),
            "the error names the path, the OS error and the way out: {err}"
        );
        if let Some(id) = err
            .split("record the end of run ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
        {
            unrecorded_end.push(id.to_owned());
        } else {
            assert!(err.contains("record the start of run"), "{err}");
            refused += 1;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{RUNS} runs in {elapsed:?}: {} done, first failure at run {first_failure:?}, {refused} refused at start, {} without their end recorded",
        done.len(),
        unrecorded_end.len()
    );
    let first_failure = first_failure.expect("the disk filled up");
    assert!(
        (RUNS / 4..RUNS * 3 / 4).contains(&first_failure),
        "the disk filled up mid-way, not at run {first_failure}"
    );
    assert!(refused > RUNS / 10, "{refused} runs refused at start");

    // The live coordinator knows the runs whose end it could not write as failed.
    let live = runs_json(&mesh);
    for id in &unrecorded_end {
        assert_eq!(state_of(&live, id).as_deref(), Some("failed"), "{id}");
    }

    // The operator frees space and restarts: every run reported done is there.
    mesh.coordinator.kill();
    std::fs::remove_file(&ballast).expect("remove the ballast");
    mesh.restart_coordinator();
    let after = runs_json(&mesh);
    for id in &done {
        assert_eq!(
            state_of(&after, id).as_deref(),
            Some("done"),
            "run {id} reported success and must be stored"
        );
    }
    for id in &unrecorded_end {
        assert_eq!(state_of(&after, id).as_deref(), Some("interrupted"), "{id}");
    }
    assert_eq!(after.len(), done.len() + unrecorded_end.len());
}

#[test]
fn a_damaged_record_in_the_middle_loses_only_itself() {
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = store_dir.path().join("store");
    let mut mesh = mesh_with_probe(store.clone());
    let ids: Vec<String> = (0..6)
        .map(|_| {
            let out = ping(&mesh);
            assert_exit(&out, 0, "ping");
            run_id(&out)
        })
        .collect();
    mesh.coordinator.kill();
    let file = store.join("runs.pb");
    let mut bytes = std::fs::read(&file).expect("runs.pb");
    let hit = bytes.len() / 2;
    bytes[hit] ^= 0xff;
    std::fs::write(&file, &bytes).expect("damage runs.pb");

    mesh.restart_coordinator();
    let log = mesh
        .coordinator
        .wait_for_log("skipped a damaged record", Duration::from_secs(5));
    let field = |name: &str| -> usize {
        log.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the warning names {name}: {log}"))
    };
    let (offset, skipped) = (field("offset"), field("skipped_bytes"));
    assert!(
        offset <= hit && hit < offset + skipped && skipped < bytes.len() / 6,
        "one record skipped around byte {hit}: offset {offset}, {skipped} bytes"
    );
    let runs = runs_json(&mesh);
    let states: Vec<_> = ids.iter().map(|id| state_of(&runs, id)).collect();
    // The damaged record is one run's start (superseded anyway) or its end
    // (the run then shows as its start record left it: interrupted).
    let done = states
        .iter()
        .filter(|s| s.as_deref() == Some("done"))
        .count();
    assert!(
        done >= ids.len() - 1
            && states
                .iter()
                .all(|s| matches!(s.as_deref(), Some("done" | "interrupted"))),
        "every run kept, at most one without its end: {states:?}"
    );
}

#[test]
fn a_run_in_flight_when_the_coordinator_is_killed_is_interrupted_after_restart() {
    let store_dir = tempfile::tempdir().expect("temp dir");
    let store = store_dir.path().join("store");
    let mut mesh = mesh_with_probe(store.clone());
    let id = mesh.kill_coordinator_mid_run();
    let runs = runs_json(&mesh);
    assert_eq!(
        state_of(&runs, &id).as_deref(),
        Some("interrupted"),
        "{runs:?}"
    );
    let out = mesh.meshctl(&["runs", &id, "-o", "json"]);
    assert_exit(&out, 0, "meshctl runs ID");
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(one["state"], "interrupted");
}

#[test]
fn an_unwritable_store_is_refused_at_start() {
    let tls = tempfile::tempdir().expect("temp dir");
    let d = tls.path().to_str().expect("utf-8").to_owned();
    assert_exit(
        &run("meshctl", &["certs", "init", "--dir", &d]),
        0,
        "certs init",
    );
    let start = |store: &Path| {
        let mut cmd = Command::new(bin("mesh-coordinator"));
        cmd.args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--tls-dir", &d])
            .arg("--store")
            .arg(store);
        let mut coordinator = Daemon::spawn("mesh-coordinator", cmd);
        let begun = Instant::now();
        let status = coordinator.wait_exit(Duration::from_secs(10));
        (status, begun.elapsed(), coordinator.stderr())
    };

    // A path that is a file: no root needed.
    let file = tls.path().join("not-a-dir");
    std::fs::write(&file, b"").expect("file");
    let (status, _, err) = start(&file);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");

    // A read-only file system: root ignores permission bits, not this.
    let Some(disk) = Tmpfs::mount("size=1m,ro") else {
        return;
    };
    let (status, took, err) = start(&disk.path);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        took < Duration::from_secs(5),
        "refused at once, not after {took:?}"
    );
    assert!(
        err.contains(&disk.path.display().to_string())
            && err.contains("Read-only file system")
            && err.contains("point --store at another directory"),
        "names the directory, the problem and the way out: {err}"
    );
}
