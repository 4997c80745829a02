//! Compiles capture filters off the async threads.
//!
//! libpcap's compiler is synchronous and its time and memory grow faster
//! than linearly with the expression, so the coordinator bounds it three
//! ways: the expression's size is checked first, in the caller
//! ([`bpf::check_size`], microseconds); the compile runs in tokio's
//! blocking pool, at most [`MAX_CONCURRENT_COMPILES`] at once; and a caller
//! waits at most [`COMPILE_BUDGET`] (queueing included) before the run is
//! refused. A compile that overruns keeps its slot until libpcap returns, so
//! runaway compiles cannot pile up beyond the cap.
//!
//! It plans nothing: the capture plan leaves the programs empty and
//! [`programs`] fills them in.

use std::time::Duration;

use probemesh_packet::bpf::{self, FilterError};
use probemesh_proto::pb;
use tokio::sync::Semaphore;

use crate::error::Error;

/// Longest a run request waits for its filter to compile, queueing included.
pub const COMPILE_BUDGET: Duration = Duration::from_secs(2);
/// Filters compiled at once, coordinator-wide.
pub const MAX_CONCURRENT_COMPILES: usize = 2;

/// The coordinator-wide compile slots.
static COMPILE_SLOTS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_COMPILES);

/// Compiles `task.filter_expr` for every link layer, keeping at most
/// `task.snaplen` bytes per packet, and stores the programs in `task`.
pub async fn programs(task: &mut pb::CaptureTask) -> Result<(), Error> {
    let refused = |e: FilterError| Error::InvalidRequest(format!("{e}; {}", e.hint()));
    bpf::check_size(&task.filter_expr).map_err(refused)?;
    let (expr, snaplen) = (task.filter_expr.clone(), task.snaplen);
    let filter = bounded(&COMPILE_SLOTS, COMPILE_BUDGET, move || {
        bpf::compile_filter(&expr, snaplen)
    })
    .await?
    .map_err(refused)?;
    task.filter_ethernet = filter.ethernet.iter().map(|i| i.to_wire()).collect();
    task.filter_raw_ip = filter.raw_ip.iter().map(|i| i.to_wire()).collect();
    Ok(())
}

/// Runs `work` in the blocking pool once a slot of `slots` is free, waiting
/// at most `budget` in all. The slot goes with the work: one that overruns
/// the budget keeps it until it returns.
async fn bounded<T: Send + 'static>(
    slots: &'static Semaphore,
    budget: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let over_budget = || {
        Error::Overloaded(format!(
            "the capture filter did not compile within its budget of {} (the coordinator \
             compiles at most {MAX_CONCURRENT_COMPILES} filters at once): try again, or narrow \
             the filter to the hosts and ports of the path",
            humantime::format_duration(budget),
        ))
    };
    let compiled = tokio::time::timeout(budget, async {
        let slot = slots.acquire().await.map_err(|_| over_budget())?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|e| Error::InvalidRequest(format!("compiling the filter failed: {e}")))
    })
    .await;
    compiled.unwrap_or_else(|_| Err(over_budget()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    /// The largest filter [`bpf::check_size`] lets through: 64 terms in
    /// about 1 KiB.
    fn largest_filter() -> String {
        let filter = (0..64)
            .map(|i| format!("port {}", 1000 + i))
            .collect::<Vec<_>>()
            .join(" or ");
        assert!(bpf::check_size(&filter).is_ok(), "{filter}");
        filter
    }

    #[tokio::test]
    async fn the_largest_filter_allowed_compiles_well_within_the_budget() {
        let mut task = pb::CaptureTask {
            filter_expr: largest_filter(),
            snaplen: 128,
            ..Default::default()
        };
        let started = Instant::now();
        programs(&mut task).await.expect("compiles");
        assert!(
            started.elapsed() < COMPILE_BUDGET / 4,
            "{:?}",
            started.elapsed()
        );
        assert!(!task.filter_ethernet.is_empty() && !task.filter_raw_ip.is_empty());
    }

    #[tokio::test]
    async fn an_oversized_filter_is_refused_without_a_slot() {
        let mut task = pb::CaptureTask {
            filter_expr: vec!["icmp"; 100].join(" or "),
            ..Default::default()
        };
        let err = programs(&mut task).await.unwrap_err().to_string();
        assert!(
            err.contains("100 terms joined by and/or, at most 64"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn work_over_the_budget_is_refused_naming_the_budget() {
        static SLOTS: Semaphore = Semaphore::const_new(1);
        let started = Instant::now();
        let err = bounded(&SLOTS, Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_millis(400));
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(300));
        assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
        assert!(err.to_string().contains("budget of 100ms"), "{err}");
        // The overrunning work keeps its slot until it returns.
        assert_eq!(SLOTS.available_permits(), 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(SLOTS.available_permits(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_cap_run_at_once() {
        static SLOTS: Semaphore = Semaphore::const_new(2);
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static MOST: AtomicUsize = AtomicUsize::new(0);
        let jobs = (0..6).map(|_| {
            bounded(&SLOTS, Duration::from_secs(5), || {
                let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                MOST.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                RUNNING.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for done in futures::future::join_all(jobs).await {
            done.expect("within the budget");
        }
        assert_eq!(MOST.load(Ordering::SeqCst), 2);
    }
}
