//! The Peer service: what one coordinator asks of another that holds a
//! probe's stream (several coordinators sharing etcd). `Relay` runs one task
//! on a probe held here for the caller and streams its answers back;
//! `Clock` is one clock exchange plus this coordinator's estimates of the
//! probes asked about. Callable only with a coordinator certificate. It
//! relays only to probes whose stream is held here: never a second hop.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use probemesh_proto::pb;
use probemesh_proto::pb::relay_request::Msg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::{Access, authorize};
use crate::clock_sync;
use crate::dispatch::TaskHandle;
use crate::error::Error;
use crate::execute::cancel;
use crate::mesh::clock::MAX_CLOCK_NAMES;
use crate::registry::Link;
use crate::state::Coordinator;

/// Relay events queued towards the caller.
const EVENT_BUFFER: usize = 64;

/// Peer over the shared state.
#[derive(Debug, Clone)]
pub struct PeerService {
    state: Arc<Coordinator>,
}

impl PeerService {
    /// The service.
    pub fn new(state: Arc<Coordinator>) -> Self {
        Self { state }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RelayEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type RelayStream = EventStream;

    async fn relay(
        &self,
        req: Request<Streaming<pb::RelayRequest>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        authorize(&req, &self.state.revocations, "Peer.Relay", Access::Peer)?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(self.state.timing.hello_timeout, inbound.message())
            .await
            .map_err(|_| Error::InvalidRequest("no task within the hello timeout".into()))??;
        let Some(pb::RelayRequest {
            msg:
                Some(Msg::Task(pb::RelayTask {
                    probe,
                    task: Some(task),
                })),
        }) = first
        else {
            return Err(Error::InvalidRequest(
                "the first message of a relay must be its task".into(),
            )
            .into());
        };
        let link = self
            .state
            .registry()
            .local_link(&probe)
            .ok_or_else(|| Error::ProbeOffline(probe.clone()))?;
        let handle = self
            .state
            .dispatcher
            .dispatch(&probe, &link, task)
            .await
            .map_err(|e| Error::ProbeOffline(e.to_string()))?;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(serve_relay(self.state.clone(), link, handle, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn clock(
        &self,
        req: Request<pb::PeerClockRequest>,
    ) -> Result<Response<pb::PeerClockReply>, Status> {
        let t2_ns = self.state.clock.now_unix_ns();
        authorize(&req, &self.state.revocations, "Peer.Clock", Access::Peer)?;
        let request = req.into_inner();
        if request.probes.len() > MAX_CLOCK_NAMES {
            return Err(Error::InvalidRequest(format!(
                "a clock exchange may ask about at most {MAX_CLOCK_NAMES} probes, not {}",
                request.probes.len()
            ))
            .into());
        }
        let probes = {
            let registry = self.state.registry();
            if request.burst {
                for link in request.probes.iter().filter_map(|p| registry.local_link(p)) {
                    clock_sync::clock_burst(&self.state, &link);
                }
            }
            let since = request.fresh_since_ns;
            request
                .probes
                .iter()
                .filter(|p| registry.local_link(p).is_some())
                .filter_map(|p| {
                    let fresh = (since > 0)
                        .then(|| registry.clock_since(p, since))
                        .flatten();
                    fresh
                        .or_else(|| registry.clock(p))
                        .map(|s| pb::PeerProbeClock {
                            probe: p.clone(),
                            offset_ns: s.offset_ns,
                            delay_ns: s.delay_ns,
                        })
                })
                .collect()
        };
        Ok(Response::new(pb::PeerClockReply {
            t1_ns: request.t1_ns,
            t2_ns,
            t3_ns: self.state.clock.now_unix_ns(),
            probes,
        }))
    }
}

/// Forwards the task's progress and result to the caller; a cancel from
/// the caller, or the caller going away, cancels it on the probe, and a stop
/// or a capture's instant is passed down.
async fn serve_relay(
    state: Arc<Coordinator>,
    link: Link,
    mut handle: TaskHandle,
    mut inbound: Streaming<pb::RelayRequest>,
    tx: mpsc::Sender<Result<pb::RelayEvent, Status>>,
) {
    let event = |event| Ok(pb::RelayEvent { event: Some(event) });
    loop {
        tokio::select! {
            Some(p) = handle.progress.recv() => {
                if tx.send(event(pb::relay_event::Event::Progress(p))).await.is_err() {
                    break;
                }
            }
            result = &mut handle.result => {
                while let Ok(p) = handle.progress.try_recv() {
                    let _ = tx.send(event(pb::relay_event::Event::Progress(p))).await;
                }
                if let Ok(r) = result {
                    let _ = tx.send(event(pb::relay_event::Event::Result(r))).await;
                }
                return;
            }
            request = inbound.message() => match request {
                Ok(Some(pb::RelayRequest { msg: Some(Msg::Stop(_)) })) => {
                    let stop = pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::Stop(pb::StopTask {
                            task_id: handle.task_id.clone(),
                        })),
                    };
                    let _ = link.tx.send(Ok(stop)).await;
                }
                Ok(Some(pb::RelayRequest { msg: Some(Msg::Arm(a)) })) => {
                    let arm = pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::Arm(pb::ArmCapture {
                            task_id: handle.task_id.clone(),
                            ..a
                        })),
                    };
                    let _ = link.tx.send(Ok(arm)).await;
                }
                Ok(Some(pb::RelayRequest { msg: Some(Msg::Task(_)) | None })) => {}
                // A cancel, or the caller gone.
                Ok(Some(_) | None) | Err(_) => break,
            }
        }
    }
    cancel(&state, &link, &handle.task_id).await;
}
