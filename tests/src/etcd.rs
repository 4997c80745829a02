//! A real etcd cluster for the tests: Debian's `etcd` server, each member on
//! 127.0.0.1 with ports the OS handed out, data in a temporary directory,
//! every member killed (by the PID we started) and its data removed on drop;
//! and [`Cuttable`], a path to it one coordinator can be cut off on.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Daemon, free_port, runtime, wait_for};

/// How long a cluster may take to elect a leader at start or after a kill.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// One member: its ports and, while it runs, its process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Daemon>,
}

/// A running etcd cluster of one or more members.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    data: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `members` members and waits until they have a leader. Panics
    /// (naming the missing binary) when etcd is not installed: the test
    /// command installs `etcd-server`.
    pub fn start(members: usize) -> Self {
        assert!(members >= 1, "an etcd cluster has at least one member");
        let etcd = etcd_binary();
        assert!(
            etcd.exists(),
            "{} is missing: install etcd-server (scripts/deps.sh does)",
            etcd.display()
        );
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            initial_cluster,
            data: tempfile::tempdir().expect("temporary directory for etcd"),
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster.wait_healthy();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.data.path().join(&member.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "probemesh-test"])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "error"]);
        let process = Daemon::spawn(&format!("etcd {}", member.name), cmd);
        self.members[i].process = Some(process);
    }

    /// Client URLs of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The endpoints as `--etcd` takes them.
    pub fn endpoint_list(&self) -> String {
        self.endpoints().join(",")
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: `start` needs one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kills member `i` with SIGKILL (its data stays for [`Self::restart`]).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// Starts member `i` again on its data and ports; waits for a leader.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.members[i].process.is_none(),
            "member {i} is still running"
        );
        self.spawn(i);
        self.wait_healthy();
    }

    /// The index of the current leader, waiting for one to be elected.
    pub fn leader(&self) -> usize {
        wait_for("an etcd leader", HEALTHY_WITHIN, || self.find_leader())
    }

    /// Waits until every running member answers and they agree on a leader;
    /// returns how long it took.
    pub fn wait_healthy(&self) -> Duration {
        let start = Instant::now();
        self.leader();
        start.elapsed()
    }

    /// The leader as the running members report it, when they all answer
    /// and agree on a running one.
    fn find_leader(&self) -> Option<usize> {
        let runtime = runtime();
        let mut leaders = Vec::new();
        for member in self.members.iter().filter(|m| m.process.is_some()) {
            let url = format!("http://127.0.0.1:{}", member.client_port);
            let status = runtime.block_on(async {
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_millis(500));
                let mut client = etcd_client::Client::connect([url], Some(options))
                    .await
                    .ok()?;
                let status = client.status().await.ok()?;
                let id = status.header()?.member_id();
                Some((id, status.leader()))
            })?;
            leaders.push(status);
        }
        let (_, leader) = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|&(_, l)| l != leader) {
            return None;
        }
        // Right after a kill the others still name the dead leader until
        // their election timeout: only a running member counts.
        let member_ids = self.member_ids(&runtime)?;
        member_ids
            .iter()
            .position(|&id| id == leader)
            .filter(|&i| self.members[i].process.is_some())
    }

    /// Member ids in the order of `self.members`, asked of a running member.
    fn member_ids(&self, runtime: &tokio::runtime::Runtime) -> Option<Vec<u64>> {
        let url = self
            .members
            .iter()
            .find(|m| m.process.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))?;
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect([url], None).await.ok()?;
            let list = client.member_list().await.ok()?;
            self.members
                .iter()
                .map(|m| {
                    list.members()
                        .iter()
                        .find(|x| x.name() == m.name)
                        .map(etcd_client::Member::id)
                })
                .collect()
        })
    }

    /// A member's stderr so far (etcd logs errors only), for failure messages.
    pub fn log(&self, i: usize) -> String {
        self.members[i]
            .process
            .as_ref()
            .map(Daemon::stderr)
            .unwrap_or_default()
    }

    /// Where member data lives (removed on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().to_owned()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut process) = member.process.take() {
                process.kill();
            }
        }
    }
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("MESH_ETCD_BIN").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from)
}

/// A TCP path to etcd that a test can cut: a forwarder on 127.0.0.1 in
/// front of each member. Cutting resets every connection through it and
/// refuses new ones (what a coordinator partitioned from etcd sees);
/// healing lets connections through again.
#[derive(Debug)]
pub struct Cuttable {
    endpoints: Vec<String>,
    state: Arc<CutState>,
}

#[derive(Debug, Default)]
struct CutState {
    cut: AtomicBool,
    closed: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl CutState {
    fn reset_all(&self) {
        for stream in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Cuttable {
    /// Forwarders to every member of `cluster`.
    pub fn new(cluster: &EtcdCluster) -> Self {
        let state = Arc::new(CutState::default());
        let endpoints = cluster
            .members
            .iter()
            .map(|m| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind a forwarder");
                listener
                    .set_nonblocking(true)
                    .expect("nonblocking listener");
                let url = format!("http://{}", listener.local_addr().expect("its address"));
                let target = SocketAddr::from(([127, 0, 0, 1], m.client_port));
                let state = state.clone();
                std::thread::spawn(move || forward(&listener, target, &state));
                url
            })
            .collect();
        Self { endpoints, state }
    }

    /// The forwarders' URLs, as `--etcd` takes them.
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// Resets every connection and refuses new ones until [`Self::heal`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.reset_all();
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.state.reset_all();
    }
}

/// Accepts on `listener` until the forwarder is dropped; each connection is
/// piped to `target` both ways, or closed at once while cut.
fn forward(listener: &TcpListener, target: SocketAddr, state: &Arc<CutState>) {
    while !state.closed.load(Ordering::SeqCst) {
        let Ok((inbound, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if state.cut.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
            continue;
        };
        let _ = inbound.set_nonblocking(false);
        let pairs = [
            (inbound.try_clone(), outbound.try_clone()),
            (outbound.try_clone(), inbound.try_clone()),
        ];
        {
            let mut open = state.open.lock().unwrap_or_else(|p| p.into_inner());
            open.extend([inbound, outbound]);
        }
        for (from, to) in pairs {
            if let (Ok(mut from), Ok(mut to)) = (from, to) {
                // Ends when either side closes or the path is cut (reset).
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    }
}
