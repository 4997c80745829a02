//! Tasks in flight: routes each probe's progress and result messages back to
//! whoever dispatched the task, and fails them when the probe goes away.

use std::collections::HashMap;
use std::sync::Mutex;

use probemesh_proto::pb;
use tokio::sync::{mpsc, oneshot};

use crate::registry::{ConnId, Link};

/// Progress events buffered per task before the probe is slowed down.
const PROGRESS_BUFFER: usize = 256;

/// The receiving end of a dispatched task.
#[derive(Debug)]
pub struct TaskHandle {
    /// The task's id, as sent to the probe.
    pub task_id: String,
    /// Progress messages as the probe sends them.
    pub progress: mpsc::Receiver<pb::TaskProgress>,
    /// The final result; an `Err` means the probe vanished first.
    pub result: oneshot::Receiver<pb::TaskResult>,
}

#[derive(Debug)]
struct Pending {
    probe: String,
    conn: ConnId,
    progress: mpsc::Sender<pb::TaskProgress>,
    result: oneshot::Sender<pb::TaskResult>,
}

/// Why a task could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("probe '{0}' disconnected before the task could be sent")]
    Disconnected(String),
}

/// Pending tasks by id.
#[derive(Debug, Default)]
pub struct Dispatcher {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Dispatcher {
    /// Sends `task` down `link` to `probe` and returns where its answers arrive.
    pub async fn dispatch(
        &self,
        probe: &str,
        link: &Link,
        task: pb::Task,
    ) -> Result<TaskHandle, DispatchError> {
        let (progress_tx, progress_rx) = mpsc::channel(PROGRESS_BUFFER);
        let (result_tx, result_rx) = oneshot::channel();
        let task_id = task.task_id.clone();
        self.lock().insert(
            task_id.clone(),
            Pending {
                probe: probe.to_owned(),
                conn: link.conn,
                progress: progress_tx,
                result: result_tx,
            },
        );
        let msg = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Task(task)),
        };
        if link.tx.send(Ok(msg)).await.is_err() {
            self.lock().remove(&task_id);
            return Err(DispatchError::Disconnected(probe.to_owned()));
        }
        Ok(TaskHandle {
            task_id,
            progress: progress_rx,
            result: result_rx,
        })
    }

    /// Routes a progress message from `probe`; messages for tasks the probe
    /// was not given are dropped.
    pub async fn progress(&self, probe: &str, msg: pb::TaskProgress) {
        let tx = {
            let pending = self.lock();
            match pending.get(&msg.task_id) {
                Some(p) if p.probe == probe => p.progress.clone(),
                _ => return,
            }
        };
        // A dispatcher that stopped listening just misses progress.
        let _ = tx.send(msg).await;
    }

    /// Completes a task with the probe's result.
    pub fn complete(&self, probe: &str, result: pb::TaskResult) {
        let mut pending = self.lock();
        if pending
            .get(&result.task_id)
            .is_some_and(|p| p.probe == probe)
            && let Some(p) = pending.remove(&result.task_id)
        {
            let _ = p.result.send(result);
        }
    }

    /// Forgets a task (its requester gave up).
    pub fn forget(&self, task_id: &str) {
        self.lock().remove(task_id);
    }

    /// Fails every task sent over `conn` to `probe`: their result channels
    /// close, which the waiting side reports as a lost probe.
    pub fn fail_connection(&self, probe: &str, conn: ConnId) {
        self.lock()
            .retain(|_, p| !(p.probe == probe && p.conn == conn));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
