//! Batched progress: a ping's replies travel to the link as a few
//! `pb::PingReplyBatch` messages instead of one `pb::TaskProgress` each
//! (every message costs an HTTP/2 frame, a TLS record and a write on the
//! probe, the coordinator and meshctl), or not at all when the caller reads
//! the summary only. What the caller asked for is `pb::ProgressDelivery`;
//! [`Delivery`] is its validated form.

use std::time::Duration;

use probemesh_proto::pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WireProgress;
use crate::tasks::context::Progress;
use crate::tasks::ping::PingEvent;
use crate::tasks::types::Delivery;

/// `BATCHED`: a reply waits at most this long for company: below what a
/// reader at a terminal notices, and long enough to gather several replies
/// at the intervals where per-message costs add up (5 at `-i 20ms`; a
/// few-millisecond window gathered none there).
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
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

impl WireProgress {
    /// [`WireProgress::run`] as `delivery` asks: each event alone, in
    /// batches, or none (the task's events are dropped where they are made).
    pub async fn run_delivered<E, F, Fut, T>(&self, delivery: Delivery, task: F) -> T
    where
        E: Batch,
        F: FnOnce(Progress<E>) -> Fut,
        Fut: Future<Output = T>,
    {
        match delivery {
            Delivery::Each => self.run(task).await,
            Delivery::ResultOnly => task(Progress::discard()).await,
            Delivery::Batched { window, max } => {
                let max = max.max(1);
                let (tx, rx) = mpsc::channel(max);
                let forward = forward_batched(self.clone(), rx, window, max);
                let (output, ()) = tokio::join!(task(Progress::new(tx)), forward);
                output
            }
        }
    }
}

/// Carries events to the link in batches: a batch goes out when its first
/// event is `window` old, when it holds `max` events, or when the task drops
/// its sender. Order is kept. After a cancel, a batch goes out only if the
/// link has room (as [`super::forward`] does).
async fn forward_batched<E: Batch>(
    wire: WireProgress,
    mut events: mpsc::Receiver<E>,
    window: Duration,
    max: usize,
) {
    let mut batch: Vec<E> = Vec::with_capacity(max);
    let flush_at = tokio::time::sleep(window);
    tokio::pin!(flush_at);
    loop {
        let event = if batch.is_empty() {
            events.recv().await
        } else {
            tokio::select! {
                biased;
                event = events.recv() => event,
                () = &mut flush_at => {
                    send(&wire, &mut batch).await;
                    continue;
                }
            }
        };
        let Some(event) = event else {
            break;
        };
        if batch.is_empty() {
            flush_at.as_mut().reset(Instant::now() + window);
        }
        batch.push(event);
        if batch.len() >= max {
            send(&wire, &mut batch).await;
        }
    }
    if !batch.is_empty() {
        send(&wire, &mut batch).await;
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

    #[tokio::test(start_paused = true)]
    async fn a_batch_leaves_when_its_first_event_is_a_window_old() {
        let (wire, mut rx) = wire();
        let delivery = Delivery::Batched {
            window: Duration::from_millis(5),
            max: 256,
        };
        let started = Instant::now();
        let sent_at = wire
            .run_delivered(delivery, |p| async move {
                let cancel = CancellationToken::new();
                for seq in 1..=3 {
                    p.send(timeout(seq), &cancel).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // The first three went out at 5 ms; these two at the end.
                tokio::time::sleep(Duration::from_millis(10)).await;
                p.send(timeout(4), &cancel).await;
                p.send(timeout(5), &cancel).await;
                Instant::now()
            })
            .await;
        drop(wire);
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
            assert_eq!(p.task_id, "t1");
            got.push(seqs(&p));
        }
        assert_eq!(got, [vec![1, 2, 3], vec![4, 5]]);
        assert_eq!(sent_at - started, Duration::from_millis(16));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_leaves_at_once_and_a_lone_event_travels_as_itself() {
        let (wire, mut rx) = wire();
        let delivery = Delivery::Batched {
            window: Duration::from_secs(1),
            max: 4,
        };
        wire.run_delivered(delivery, |p| async move {
            let cancel = CancellationToken::new();
            for seq in 1..=9 {
                p.send(timeout(seq), &cancel).await;
            }
        })
        .await;
        drop(wire);
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
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
                (true, vec![9])
            ]
        );
    }

    #[tokio::test]
    async fn result_only_sends_nothing() {
        let (wire, mut rx) = wire();
        let n = wire
            .run_delivered(Delivery::ResultOnly, |p| async move {
                let cancel = CancellationToken::new();
                p.send(timeout(1), &cancel).await;
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
