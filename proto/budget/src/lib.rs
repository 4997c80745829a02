//! probemesh-budget: property tests that run for a wall-clock budget.
//!
//! The fuzz-style harnesses of every crate (`tests/fuzz.rs`, `fuzz_tests.rs`)
//! feed generated inputs to a parser until a time budget is spent, rather
//! than for a fixed number of cases, so the test command's cost is known in
//! advance and a longer soak is one variable away:
//!
//! - `MESH_FUZZ_SECONDS` — the budget of each harness, seconds (fractions
//!   allowed; default [`DEFAULT_SECONDS`]);
//! - `MESH_FUZZ_SEED` — the seed of the input generator (default: random,
//!   printed by every harness so a failure can be replayed).
//!
//! A failing input is shrunk by proptest and the test fails with it; a panic
//! in the code under test counts as a failure. It is test support only: no
//! production crate depends on it. Coverage-guided fuzzing is `fuzz/`
//! (cargo-fuzz, nightly), see docs/operations.md.

use std::io::Write as _;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestRng, TestRunner};

/// The variable that sets each harness's budget, in seconds.
pub const SECONDS_VAR: &str = "MESH_FUZZ_SECONDS";
/// The variable that fixes the generator's seed (a `u64`).
pub const SEED_VAR: &str = "MESH_FUZZ_SEED";
/// Each harness's budget when [`SECONDS_VAR`] is unset, seconds.
pub const DEFAULT_SECONDS: f64 = 3.0;

/// The budget of one harness: [`SECONDS_VAR`] or [`DEFAULT_SECONDS`].
///
/// # Panics
/// When [`SECONDS_VAR`] is set to something that is not a non-negative
/// number of seconds: a typo must not silently run the default.
pub fn budget() -> Duration {
    match std::env::var(SECONDS_VAR) {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_else(|| {
                panic!("{SECONDS_VAR}={text:?} is not a number of seconds (e.g. 5 or 0.5)")
            }),
        Err(_) => Duration::from_secs_f64(DEFAULT_SECONDS),
    }
}

fn seed() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// Runs `test` on values drawn from `strategy` until [`budget`] is spent
/// (at least once), then prints `fuzz NAME: N inputs in S s (seed X)` on
/// stderr (uncaptured, so every test log shows it) and returns N. Inputs
/// that `test` rejects (`prop_assume!`) are not counted.
///
/// # Panics
/// When `test` fails or panics on some input: with the shrunk input, the
/// reason and the seed to replay it with ([`SEED_VAR`]).
pub fn run_for<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let seed = seed();
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let config = Config {
        failure_persistence: None,
        // Rejected inputs (`prop_assume!`) are skipped, never the reason a run fails.
        max_global_rejects: u32::MAX,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let budget = budget();
    let started = Instant::now();
    let mut inputs = 0u64;
    loop {
        let tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|reason| panic!("fuzz {name}: cannot generate inputs: {reason}"));
        match runner.run_one(tree, &test) {
            Ok(true) => inputs += 1,
            Ok(false) => {}
            Err(failure) => panic!("fuzz {name} (replay with {SEED_VAR}={seed}): {failure}"),
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    // Straight to stderr, past libtest's capture: the count shows in every
    // test run's log, not only with --nocapture.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {inputs} inputs in {:.1} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn runs_until_the_budget_is_spent_and_counts() {
        let started = Instant::now();
        let inputs = run_for("count", any::<u8>(), |_| Ok(()));
        assert!(started.elapsed() >= budget(), "{:?}", started.elapsed());
        assert!(inputs > 1, "{inputs}");
    }

    #[test]
    fn a_panic_fails_with_the_shrunk_input_and_the_seed() {
        let outcome = std::panic::catch_unwind(|| {
            run_for("panics", 0u32..1_000_000, |n| {
                assert!(n < 1000, "too big");
                Ok(())
            })
        });
        let message = outcome
            .err()
            .and_then(|p| p.downcast::<String>().ok())
            .map(|s| *s)
            .unwrap_or_default();
        assert!(message.contains("fuzz panics"), "{message}");
        assert!(message.contains("too big"), "{message}");
        assert!(message.contains(SEED_VAR), "{message}");
        assert!(
            message.contains("1000"),
            "shrunk to the boundary: {message}"
        );
    }
}
