//! Batched progress: a ping's replies travel to the link as a few
//! `pb::PingReplyBatch` messages instead of one `pb::TaskProgress` each
//! (every message costs an HTTP/2 frame, a TLS record and a write on the
//! probe, the coordinator and meshctl), or not at all when the caller reads
//! the summary only. What the caller asked for is `pb::ProgressDelivery`;
//! [`Delivery`] is its validated form.

use std::time::Duration;

use probemesh_proto::pb;
use tokio::sync::mpsc;

use super::WireProgress;
use crate::tasks::ping::PingEvent;
use crate::tasks::types::Delivery;

/// `BATCHED`: a reply waits at most this long for company. A message costs
/// the probe more CPU than an echo (a TCP segment through the node's stack
/// to the coordinator, h2 and TLS: about 0.25 ms against 0.13 ms an echo at
/// `-i 20ms` in the lab), so a batch must gather about a dozen replies to
/// stay a small share (12 at `-i 20ms`; 100 ms gathered 5, which cost a
/// third more CPU than ping), while four updates a second still read as a
/// live stream. Pings slower than the window send each reply at once.
pub const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// `BULK`: a reply waits at most this long; the caller prints at the end.
pub const BULK_WINDOW: Duration = Duration::from_secs(1);
/// Most replies in one batch (about 60 bytes each on the wire).
pub const MAX_BATCH: usize = 256;

/// The delivery the caller asked for.
pub fn delivery(wire: pb::ProgressDelivery) -> Delivery {
    match wire {
        pb::ProgressDelivery::Each => Delivery::Each,
        pb::ProgressDelivery::Batched => Delivery::Batched {
            window: BATCH_WINDOW,
            max: MAX_BATCH,
        },
        pb::ProgressDelivery::Bulk => Delivery::Batched {
            window: BULK_WINDOW,
            max: MAX_BATCH,
        },
        pb::ProgressDelivery::None => Delivery::ResultOnly,
    }
}

/// Events that travel together in one wire message.
pub trait Batch: Into<pb::task_progress::Event> + Sized {
    /// One wire event holding `events`, in order.
    fn batch(events: &[Self]) -> pb::task_progress::Event;
}

impl Batch for PingEvent {
    fn batch(events: &[Self]) -> pb::task_progress::Event {
        pb::task_progress::Event::PingReplies(pb::PingReplyBatch {
            replies: events.iter().map(Into::into).collect(),
        })
    }
}

/// Batches queued between a task's thread and its forwarder: one a window
/// at most, so a few cover a slow link's hiccup.
const BATCH_QUEUE: usize = 16;

impl WireProgress {
    /// Runs `task` with a sender of event batches as `delivery` asks (the
    /// task gathers them: [`Delivery::Each`] sends each event alone), or
    /// with none for [`Delivery::ResultOnly`]; each batch reaches the link
    /// as one message (split at `max` events), forwarded beside the task
    /// until it drops the sender. Returns the task's output.
    pub async fn run_delivered<E, F, Fut, T>(&self, delivery: Delivery, task: F) -> T
    where
        E: Batch,
        F: FnOnce(Option<mpsc::Sender<Vec<E>>>) -> Fut,
        Fut: Future<Output = T>,
    {
        let max = match delivery {
            Delivery::ResultOnly => return task(None).await,
            Delivery::Each => 1,
            Delivery::Batched { max, .. } => max.max(1),
        };
        let (tx, rx) = mpsc::channel(BATCH_QUEUE);
        let (output, ()) = tokio::join!(task(Some(tx)), forward_batches(self, rx, max));
        output
    }
}

/// Carries batches to the link, in order, each as one message of at most
/// `max` events. After a cancel, a batch goes out only if the link has room
/// (as [`super::forward`] does).
async fn forward_batches<E: Batch>(
    wire: &WireProgress,
    mut batches: mpsc::Receiver<Vec<E>>,
    max: usize,
) {
    while let Some(mut batch) = batches.recv().await {
        while !batch.is_empty() {
            let rest = batch.split_off(max.min(batch.len()));
            send(wire, &mut batch).await;
            batch = rest;
        }
    }
}

/// Sends `batch` as one message (a lone event as itself, which every reader
/// knows) and empties it.
async fn send<E: Batch>(wire: &WireProgress, batch: &mut Vec<E>) {
    let event = if batch.len() == 1 {
        batch.pop().map(Into::into)
    } else {
        Some(E::batch(batch))
    };
    batch.clear();
    let progress = pb::TaskProgress {
        task_id: wire.task_id.clone(),
        event,
        ..Default::default()
    };
    tokio::select! {
        biased;
        sent = wire.link.send(progress) => {
            if sent.is_err() {
                tracing::debug!(task_id = %wire.task_id, "progress receiver closed");
            }
        }
        () = wire.cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::ping::PingEventKind;
    use crate::types::Seq;
    use tokio_util::sync::CancellationToken;

    fn timeout(seq: u16) -> PingEvent {
        PingEvent {
            seq: Seq(seq),
            kind: PingEventKind::Timeout,
        }
    }

    fn seqs(p: &pb::TaskProgress) -> Vec<u32> {
        match &p.event {
            Some(pb::task_progress::Event::PingReplies(b)) => {
                b.replies.iter().map(|r| r.seq).collect()
            }
            Some(pb::task_progress::Event::PingReply(r)) => vec![r.seq],
            other => panic!("not ping progress: {other:?}"),
        }
    }

    fn wire() -> (WireProgress, mpsc::Receiver<pb::TaskProgress>) {
        let (link, rx) = mpsc::channel(64);
        let wire = WireProgress {
            task_id: "t1".into(),
            link,
            cancel: CancellationToken::new(),
        };
        (wire, rx)
    }

    #[tokio::test]
    async fn a_batch_leaves_as_one_message_split_at_max_and_a_lone_event_travels_as_itself() {
        let (wire, mut rx) = wire();
        let delivery = Delivery::Batched {
            window: Duration::from_secs(1),
            max: 4,
        };
        wire.run_delivered(delivery, |tx| async move {
            let tx = tx.expect("a batched delivery gets a sender");
            tx.send((1..=9).map(timeout).collect()).await.unwrap();
            tx.send(vec![timeout(10), timeout(11)]).await.unwrap();
        })
        .await;
        drop(wire);
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
            assert_eq!(p.task_id, "t1");
            got.push((
                matches!(p.event, Some(pb::task_progress::Event::PingReply(_))),
                seqs(&p),
            ));
        }
        assert_eq!(
            got,
            [
                (false, vec![1, 2, 3, 4]),
                (false, vec![5, 6, 7, 8]),
                (true, vec![9]),
                (false, vec![10, 11])
            ]
        );
    }

    #[tokio::test]
    async fn each_event_alone_when_each_is_asked() {
        let (wire, mut rx) = wire();
        wire.run_delivered(Delivery::Each, |tx| async move {
            let tx = tx.expect("each gets a sender");
            tx.send(vec![timeout(1), timeout(2)]).await.unwrap();
        })
        .await;
        drop(wire);
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
            assert!(
                matches!(p.event, Some(pb::task_progress::Event::PingReply(_))),
                "{p:?}"
            );
            got.extend(seqs(&p));
        }
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test]
    async fn result_only_sends_nothing() {
        let (wire, mut rx) = wire();
        let n = wire
            .run_delivered::<PingEvent, _, _, _>(Delivery::ResultOnly, |tx| async move {
                assert!(tx.is_none(), "no events for a result-only caller");
                7
            })
            .await;
        drop(wire);
        assert_eq!(n, 7);
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn wire_deliveries_map_to_windows() {
        assert_eq!(delivery(pb::ProgressDelivery::Each), Delivery::Each);
        assert_eq!(delivery(pb::ProgressDelivery::None), Delivery::ResultOnly);
        assert_eq!(
            delivery(pb::ProgressDelivery::Bulk),
            Delivery::Batched {
                window: BULK_WINDOW,
                max: MAX_BATCH
            }
        );
    }
}
