//! The relay towards a probe another coordinator holds: the [`Link`] the
//! registry gives the run code for a remote probe ends here, and each task
//! sent down it becomes one `Peer.Relay` call to the owner, whose progress
//! and result come back through the dispatcher exactly as a local probe's
//! would. A cancel, stop or capture's instant sent down the link follows the task; when the
//! relay call ends without a result the task fails as a lost probe.

use std::collections::HashMap;
use std::sync::Arc;

use probemesh_proto::pb;
use probemesh_proto::pb::coordinator_message::Msg;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::registry::ConnId;
use crate::state::Coordinator;

/// Messages queued towards one remote probe's relay.
const RELAY_BUFFER: usize = 64;
/// Cancel/stop requests queued per relayed task.
const REQUEST_BUFFER: usize = 4;

/// Records that `owner` holds `name`'s stream and starts the relay that
/// carries its tasks to the owner over `peer`.
pub fn attach_remote(
    state: &Arc<Coordinator>,
    name: &str,
    owner: pb::ProbeOwner,
    peer: Channel,
) -> ConnId {
    let (tx, rx) = mpsc::channel(RELAY_BUFFER);
    let conn = state.registry().set_remote(name, owner, tx, peer.clone());
    tokio::spawn(relay(state.clone(), name.to_owned(), peer, rx));
    conn
}

/// Serves one remote probe's link until the registry drops it.
async fn relay(
    state: Arc<Coordinator>,
    name: String,
    peer: Channel,
    mut rx: mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>,
) {
    let mut tasks: HashMap<String, mpsc::Sender<pb::RelayRequest>> = HashMap::new();
    while let Some(msg) = rx.recv().await {
        tasks.retain(|_, t| !t.is_closed());
        let request = |msg| pb::RelayRequest { msg: Some(msg) };
        match msg.ok().and_then(|m| m.msg) {
            Some(Msg::Task(task)) => {
                let (req_tx, req_rx) = mpsc::channel(REQUEST_BUFFER);
                tasks.insert(task.task_id.clone(), req_tx);
                tokio::spawn(relay_task(
                    state.clone(),
                    name.clone(),
                    peer.clone(),
                    task,
                    req_rx,
                ));
            }
            Some(Msg::Cancel(c)) => {
                if let Some(t) = tasks.remove(&c.task_id) {
                    let _ = t.send(request(pb::relay_request::Msg::Cancel(c))).await;
                }
            }
            Some(Msg::Stop(s)) => {
                if let Some(t) = tasks.get(&s.task_id) {
                    let _ = t.send(request(pb::relay_request::Msg::Stop(s))).await;
                }
            }
            Some(Msg::Arm(a)) => {
                if let Some(t) = tasks.get(&a.task_id) {
                    let _ = t.send(request(pb::relay_request::Msg::Arm(a))).await;
                }
            }
            // Clock exchanges with a remote probe are its owner's; the
            // owner's estimate comes through `mesh::clock`.
            _ => {}
        }
    }
}

/// Runs `task` on `probe` through its owner and routes the answers back.
async fn relay_task(
    state: Arc<Coordinator>,
    probe: String,
    peer: Channel,
    task: pb::Task,
    requests: mpsc::Receiver<pb::RelayRequest>,
) {
    let task_id = task.task_id.clone();
    let first = pb::RelayRequest {
        msg: Some(pb::relay_request::Msg::Task(pb::RelayTask {
            probe: probe.clone(),
            task: Some(task),
        })),
    };
    let outbound = tokio_stream::once(first).chain(ReceiverStream::new(requests));
    let mut client = pb::peer_client::PeerClient::new(peer);
    let why = match client.relay(outbound).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(pb::RelayEvent {
                        event: Some(pb::relay_event::Event::Progress(p)),
                    })) => state.dispatcher.progress(&probe, p).await,
                    Ok(Some(pb::RelayEvent {
                        event: Some(pb::relay_event::Event::Result(r)),
                    })) => {
                        state.dispatcher.complete(&probe, r);
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "the owner ended the relay without a result".to_owned(),
                    Err(status) => break status.message().to_owned(),
                }
            }
        }
        Err(status) => status.message().to_owned(),
    };
    tracing::warn!(%probe, %task_id, reason = %why, "relayed task lost");
    state.dispatcher.forget(&task_id);
}
