//! The coordinator's shutdown, as the runs see it: first it stops taking
//! new runs ([`Shutdown::begin`]), then, after a grace, it ends the runs
//! still in flight ([`Shutdown::end_runs`]), whose waits then record
//! "coordinator shutting down". The server drives the
//! steps and bounds every wait; this module only holds the signals and the
//! set of runs in flight.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by the services and every run.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when shutdown begins: no new runs.
    draining: CancellationToken,
    /// Cancelled when the grace is over: runs in flight end now.
    ending: CancellationToken,
    /// The runs in flight.
    runs: TaskTracker,
}

impl Shutdown {
    /// Stops taking new runs; runs in flight go on.
    pub fn begin(&self) {
        self.draining.cancel();
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Ends the runs still in flight: [`Shutdown::runs_ended`] resolves.
    pub fn end_runs(&self) {
        self.ending.cancel();
    }

    /// Resolves when the runs in flight must end.
    pub async fn runs_ended(&self) {
        self.ending.cancelled().await;
    }

    /// Runs `run` as a run in flight, on its own task.
    pub fn spawn_run<F>(&self, run: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runs.spawn(run);
    }

    /// Waits up to `limit` for every run in flight to finish; true when
    /// they all did.
    pub async fn runs_finished(&self, limit: Duration) -> bool {
        self.runs.close();
        tokio::time::timeout(limit, self.runs.wait()).await.is_ok()
    }

    /// How many runs are in flight.
    pub fn runs_in_flight(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_run_that_waits_for_the_end_finishes_once_runs_end() {
        let shutdown = Shutdown::default();
        let run = shutdown.clone();
        shutdown.spawn_run(async move { run.runs_ended().await });
        shutdown.begin();
        assert!(shutdown.is_draining());
        assert!(!shutdown.runs_finished(Duration::from_secs(2)).await);
        assert_eq!(shutdown.runs_in_flight(), 1);
        shutdown.end_runs();
        assert!(shutdown.runs_finished(Duration::from_secs(1)).await);
        assert_eq!(shutdown.runs_in_flight(), 0);
    }
}
