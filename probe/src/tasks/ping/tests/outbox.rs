//! How the echo loop's events leave: in the caller's batches, never
//! blocking the loop.
use super::*;

fn timeout(seq: u16) -> PingEvent {
    PingEvent {
        seq: Seq(seq),
        kind: PingEventKind::Timeout,
    }
}

/// The echo interval of the outboxes below: shorter than their windows.
const MS: Duration = Duration::from_millis(1);

fn seqs(batch: &[PingEvent]) -> Vec<u16> {
    batch.iter().map(|e| e.seq.0).collect()
}

fn batched(window_ms: u64, max: usize) -> Delivery {
    Delivery::Batched {
        window: Duration::from_millis(window_ms),
        max,
    }
}

#[test]
fn a_batch_leaves_when_its_first_event_is_a_window_old() {
    let (tx, mut rx) = mpsc::channel(16);
    let mut outbox = Outbox::new(batched(5, 256), MS, Some(tx));
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    for (seq, at) in [(1, 0), (2, 2), (3, 4)] {
        outbox.push(timeout(seq), ms(at));
    }
    assert_eq!(outbox.due(), Some(ms(5)));
    outbox.flush_due(ms(4));
    assert!(rx.try_recv().is_err(), "not due yet");
    outbox.flush_due(ms(5));
    assert_eq!(seqs(&rx.try_recv().unwrap()), [1, 2, 3]);
    assert_eq!(outbox.due(), None);
    outbox.push(timeout(4), ms(20));
    assert_eq!(
        outbox.due(),
        Some(ms(25)),
        "the window starts at the next event"
    );
    outbox.finish();
    assert_eq!(
        seqs(&rx.try_recv().unwrap()),
        [4],
        "the rest leaves at the end"
    );
}

#[test]
fn a_full_batch_leaves_at_once() {
    let (tx, mut rx) = mpsc::channel(16);
    let mut outbox = Outbox::new(batched(1000, 4), MS, Some(tx));
    let t0 = Instant::now();
    for seq in 1..=9 {
        outbox.push(timeout(seq), t0);
    }
    assert_eq!(seqs(&rx.try_recv().unwrap()), [1, 2, 3, 4]);
    assert_eq!(seqs(&rx.try_recv().unwrap()), [5, 6, 7, 8]);
    assert!(rx.try_recv().is_err());
    outbox.finish();
    assert_eq!(seqs(&rx.try_recv().unwrap()), [9]);
}

#[test]
fn a_full_queue_keeps_the_events_in_order_for_a_later_try() {
    let (tx, mut rx) = mpsc::channel(1);
    let mut outbox = Outbox::new(batched(2, 2), MS, Some(tx));
    let t0 = Instant::now();
    for seq in 1..=5 {
        outbox.push(timeout(seq), t0);
    }
    let retry = outbox.due().expect("a retry is planned");
    assert!(retry > t0, "{retry:?}");
    assert_eq!(seqs(&rx.try_recv().unwrap()), [1, 2]);
    outbox.flush_due(retry);
    assert_eq!(seqs(&rx.try_recv().unwrap()), [3, 4, 5]);
}

#[test]
fn each_event_leaves_alone_and_nothing_leaves_for_a_result_only_caller() {
    let (tx, mut rx) = mpsc::channel(16);
    let mut each = Outbox::new(Delivery::Each, MS, Some(tx.clone()));
    let t0 = Instant::now();
    each.push(timeout(1), t0);
    each.push(timeout(2), t0);
    assert_eq!(each.due(), None);
    let mut quiet = Outbox::new(Delivery::ResultOnly, MS, Some(tx));
    quiet.push(timeout(3), t0);
    quiet.finish();
    each.finish();
    assert_eq!(seqs(&rx.try_recv().unwrap()), [1]);
    assert_eq!(seqs(&rx.try_recv().unwrap()), [2]);
    assert!(
        rx.try_recv().is_err(),
        "nothing from the result-only outbox"
    );
}

#[test]
fn a_gone_reader_is_not_an_error() {
    let (tx, rx) = mpsc::channel(16);
    drop(rx);
    let mut outbox = Outbox::new(batched(5, 2), MS, Some(tx));
    let t0 = Instant::now();
    for seq in 1..=3 {
        outbox.push(timeout(seq), t0);
    }
    outbox.flush_due(t0 + Duration::from_millis(5));
    outbox.push(timeout(4), t0);
    assert_eq!(outbox.due(), None, "nothing kept for nobody");
    outbox.finish();
}

#[test]
fn a_window_no_longer_than_the_interval_sends_each_event_at_once() {
    let (tx, mut rx) = mpsc::channel(16);
    let mut outbox = Outbox::new(batched(100, 256), Duration::from_secs(1), Some(tx));
    let t0 = Instant::now();
    outbox.push(timeout(1), t0);
    assert_eq!(outbox.due(), None, "nothing waits");
    assert_eq!(seqs(&rx.try_recv().unwrap()), [1]);
}

/// The loop wakes for the flushes besides the echoes, without moving the
/// echoes' schedule, and the batch still open at the end leaves before the
/// summary.
#[test]
fn the_echo_loop_hands_its_replies_over_in_windows() {
    let spec = PingSpec {
        delivery: batched(2500, 256),
        ..spec(10)
    };
    let (result, replies, batches, sent) =
        ping_with(&spec, |_| Fate::Reply(Duration::from_millis(5)), None);
    let summary = result.unwrap();
    assert_eq!(sent, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        replies.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|r| r.rtt_ns == 5_000_000), "{replies:?}");
    // Replies at 5 ms, 1.005 s, ...: windows close at 2.505, 5.505, 8.505 s.
    assert_eq!(batches, [3, 3, 3, 1]);
    assert_eq!(summary.elapsed, Duration::from_millis(9005));
}
