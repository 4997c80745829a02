//! The path-MTU search, sans-IO: which whole-packet size to probe next, given
//! what became of the probes so far. No socket, no clock: the driver in
//! [`super`] sends a DF echo of the size [`PmtuSearch::action`] asks for,
//! waits, and feeds back one [`Answer`] per attempt with [`PmtuSearch::step`].
//!
//! The search keeps two bounds: the largest size that crossed the path and
//! the smallest that did not (with the reason: silence, a frag-needed, or the
//! local stack's `EMSGSIZE`). Order of probes:
//!
//! 1. the ceiling (the egress interface MTU): most paths are clean, one size
//!    settles them;
//! 2. a frag-needed (or `EMSGSIZE`) carrying a usable MTU is honoured: that
//!    MTU is probed next (at most [`MAX_JUMPS`] times, so a lying router
//!    cannot make the search linear);
//! 3. when nothing has crossed yet, the floor ([`MIN_MTU`]): if even that is
//!    lost the target is unreachable and the search stops;
//! 4. otherwise bisection between the bounds.
//!
//! Every probe lies strictly between the bounds, so each decided size
//! narrows them: the search ends after at most [`max_sizes`] sizes of at
//! most `attempts` probes each.

use std::net::Ipv4Addr;

use crate::types::Mtu;

/// Smallest MTU every IPv4 link must carry (RFC 791), bytes: the floor of
/// the search.
pub const MIN_MTU: Mtu = Mtu(68);
/// Largest IPv4 datagram, bytes: the ceiling never exceeds it.
pub const MAX_MTU: Mtu = Mtu(65_535);
/// Frag-needed (or `EMSGSIZE`) MTUs honoured per search; later ones only
/// narrow the bounds.
pub const MAX_JUMPS: u32 = 8;

/// Probes sent at one size before it counts as lost: 1..=10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(u8);

impl Attempts {
    /// The most attempts per size.
    pub const MAX: u8 = 10;

    /// An attempt count; `None` for 0 or above [`Attempts::MAX`].
    pub const fn new(n: u8) -> Option<Self> {
        if n == 0 || n > Self::MAX {
            None
        } else {
            Some(Self(n))
        }
    }

    /// The count.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// What became of one probe (one attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The echo reply came back: the size crosses the path.
    Reply,
    /// Nothing usable within the timeout (no reply, or an ICMP error other
    /// than frag-needed).
    Silence,
    /// A router answered "fragmentation needed and DF set".
    FragNeeded {
        /// The router.
        from: Ipv4Addr,
        /// Its next-hop MTU; `None` when it left the field 0 (pre-RFC 1191).
        mtu: Option<Mtu>,
    },
    /// The local stack refused to send (`EMSGSIZE`): the local route or
    /// interface MTU is smaller than the size.
    LocalTooBig {
        /// The route's MTU, when it could be read.
        mtu: Option<Mtu>,
    },
}

/// The verdict on one size, once its attempts are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It crossed.
    Ok,
    /// Every attempt vanished.
    Lost,
    /// A router said it is too big.
    FragNeeded {
        /// The router.
        from: Ipv4Addr,
        /// The MTU it reported, if any.
        mtu: Option<Mtu>,
    },
    /// The local stack refused it.
    LocalTooBig {
        /// The route's MTU, if known.
        mtu: Option<Mtu>,
    },
}

impl Verdict {
    /// The wire name: `ok`, `lost`, `frag_needed`, `local_too_big`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Lost => "lost",
            Verdict::FragNeeded { .. } => "frag_needed",
            Verdict::LocalTooBig { .. } => "local_too_big",
        }
    }
}

/// One decided size of the search, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Whole IPv4 packet size probed, bytes.
    pub size: Mtu,
    /// What became of it.
    pub verdict: Verdict,
}

/// Why the size just above the path MTU does not cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// It vanishes and nobody says why: a PMTU black hole.
    Silence,
    /// A router sends frag-needed: path-MTU discovery works.
    FragNeeded,
    /// The local stack refuses it.
    LocalTooBig,
}

/// How the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    /// `path_mtu` crosses the path.
    PathMtu {
        /// The largest whole-packet size that crossed, bytes.
        path_mtu: Mtu,
        /// Why `path_mtu + 1` does not; `None` when `path_mtu` is the
        /// ceiling (nothing larger was tried).
        limit: Option<Limit>,
    },
    /// Not even the floor ([`MIN_MTU`]) crossed: the target does not answer.
    Unreachable,
}

impl Conclusion {
    /// True when packets above the path MTU vanish without a frag-needed.
    pub fn blackhole(&self) -> bool {
        matches!(
            self,
            Conclusion::PathMtu {
                limit: Some(Limit::Silence),
                ..
            }
        )
    }
}

/// Where the search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the answer to attempt `attempt` (1-based) at `size`.
    /// Silence with attempts left → the same size, next attempt. Any other
    /// answer, or silence on the last attempt, decides the size → the next
    /// size between the bounds, or [`State::Done`] when the bounds meet
    /// (or the floor was lost).
    Probing {
        /// Whole IPv4 packet size, bytes.
        size: Mtu,
        /// Attempt number, 1..=attempts.
        attempt: u8,
    },
    /// Over; further answers are ignored.
    Done(Conclusion),
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send one DF probe of this whole-packet size and report its [`Answer`].
    Send(Mtu),
    /// Stop: the search is over.
    Finish(Conclusion),
}

/// The most sizes a search with this ceiling decides: the ceiling, the
/// floor, [`MAX_JUMPS`] honoured MTUs and one bisection per bit of the range.
pub fn max_sizes(ceiling: Mtu) -> u32 {
    let range = clamp_ceiling(ceiling).0 - MIN_MTU.0;
    2 + MAX_JUMPS + (u32::BITS - range.leading_zeros())
}

fn clamp_ceiling(ceiling: Mtu) -> Mtu {
    Mtu(ceiling.0.clamp(MIN_MTU.0, MAX_MTU.0))
}

/// The search state machine.
#[derive(Debug, Clone)]
pub struct PmtuSearch {
    ceiling: u32,
    attempts: u8,
    largest_ok: Option<u32>,
    smallest_bad: Option<(u32, Limit)>,
    jumps: u32,
    state: State,
    frag_needed: Option<(Ipv4Addr, Option<Mtu>)>,
    steps: Vec<Step>,
}

impl PmtuSearch {
    /// A search up to `ceiling` (clamped to [`MIN_MTU`]..=[`MAX_MTU`]),
    /// `attempts` probes per size. Starts probing the ceiling.
    pub fn new(ceiling: Mtu, attempts: Attempts) -> Self {
        let ceiling = clamp_ceiling(ceiling);
        Self {
            ceiling: ceiling.0,
            attempts: attempts.get(),
            largest_ok: None,
            smallest_bad: None,
            jumps: 0,
            state: State::Probing {
                size: ceiling,
                attempt: 1,
            },
            frag_needed: None,
            steps: Vec::new(),
        }
    }

    /// Where the search is.
    pub fn state(&self) -> State {
        self.state
    }

    /// What to do now.
    pub fn action(&self) -> Action {
        match self.state {
            State::Probing { size, .. } => Action::Send(size),
            State::Done(conclusion) => Action::Finish(conclusion),
        }
    }

    /// The sizes decided so far, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The last frag-needed received: who sent it and the MTU it carried.
    pub fn frag_needed(&self) -> Option<(Ipv4Addr, Option<Mtu>)> {
        self.frag_needed
    }

    /// Feeds the answer to the probe [`PmtuSearch::action`] asked for.
    /// Returns the size's [`Step`] when this answer decided it. Ignored once
    /// the search is over.
    pub fn step(&mut self, answer: Answer) -> Option<Step> {
        let State::Probing { size, attempt } = self.state else {
            return None;
        };
        let (verdict, jump) = match answer {
            Answer::Silence if attempt < self.attempts => {
                self.state = State::Probing {
                    size,
                    attempt: attempt + 1,
                };
                return None;
            }
            Answer::Silence => {
                self.bad(size.0, Limit::Silence);
                (Verdict::Lost, None)
            }
            Answer::Reply => {
                self.largest_ok = Some(self.largest_ok.map_or(size.0, |ok| ok.max(size.0)));
                (Verdict::Ok, None)
            }
            Answer::FragNeeded { from, mtu } => {
                self.frag_needed = Some((from, mtu));
                let jump = self.too_big(size, mtu, Limit::FragNeeded);
                (Verdict::FragNeeded { from, mtu }, jump)
            }
            Answer::LocalTooBig { mtu } => {
                let jump = self.too_big(size, mtu, Limit::LocalTooBig);
                (Verdict::LocalTooBig { mtu }, jump)
            }
        };
        let step = Step { size, verdict };
        self.steps.push(step);
        self.state = self.next(jump);
        Some(step)
    }

    /// `size` is too big and something said `mtu` fits: everything above
    /// `mtu` is bad, and `mtu` is worth probing next. An MTU that is not
    /// between the bounds is not believed: only `size` is bad then.
    fn too_big(&mut self, size: Mtu, mtu: Option<Mtu>, why: Limit) -> Option<u32> {
        let lo = self.largest_ok.unwrap_or(0);
        match mtu {
            Some(Mtu(m)) if m < size.0 && m >= MIN_MTU.0 && m > lo => {
                self.bad(m + 1, why);
                Some(m)
            }
            _ => {
                self.bad(size.0, why);
                None
            }
        }
    }

    fn bad(&mut self, size: u32, why: Limit) {
        if self.smallest_bad.is_none_or(|(b, _)| size < b) {
            self.smallest_bad = Some((size, why));
        }
    }

    /// The state after a size was decided.
    fn next(&mut self, jump: Option<u32>) -> State {
        let hi = self.smallest_bad.map_or(self.ceiling, |(b, _)| b - 1);
        if let Some(ok) = self.largest_ok
            && ok >= hi
        {
            return State::Done(Conclusion::PathMtu {
                path_mtu: Mtu(ok),
                limit: self.smallest_bad.map(|(_, why)| why),
            });
        }
        if hi < MIN_MTU.0 {
            return State::Done(Conclusion::Unreachable);
        }
        let lo = self.largest_ok;
        let probe = |size| State::Probing {
            size: Mtu(size),
            attempt: 1,
        };
        if let Some(m) = jump
            && self.jumps < MAX_JUMPS
            && m > lo.unwrap_or(0)
            && m <= hi
        {
            self.jumps += 1;
            return probe(m);
        }
        match lo {
            None => probe(MIN_MTU.0),
            Some(ok) => probe(ok + (hi - ok).div_ceil(2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_case::test_case;

    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    /// A simulated path: the local link, then routers each with an MTU and
    /// whether they send frag-needed; `reachable = false` drops everything.
    #[derive(Debug, Clone)]
    struct Path {
        local_mtu: u32,
        hops: Vec<(u32, bool)>,
        reachable: bool,
    }

    impl Path {
        fn answer(&self, size: Mtu) -> Answer {
            if size.0 > self.local_mtu {
                return Answer::LocalTooBig {
                    mtu: Some(Mtu(self.local_mtu)),
                };
            }
            if !self.reachable {
                return Answer::Silence;
            }
            match self.hops.iter().find(|(mtu, _)| *mtu < size.0) {
                Some((mtu, true)) => Answer::FragNeeded {
                    from: ROUTER,
                    mtu: Some(Mtu(*mtu)),
                },
                Some((_, false)) => Answer::Silence,
                None => Answer::Reply,
            }
        }

        /// The path MTU and whether the binding hop is silent.
        fn truth(&self, ceiling: u32) -> (u32, bool) {
            let mut mtu = ceiling.min(self.local_mtu);
            let mut silent = false;
            for &(hop, frag) in &self.hops {
                if hop < mtu {
                    mtu = hop;
                    silent = !frag;
                }
            }
            (mtu, silent)
        }
    }

    fn run(path: &Path, ceiling: u32, attempts: u8) -> (PmtuSearch, Conclusion, u32) {
        let mut search = PmtuSearch::new(Mtu(ceiling), Attempts::new(attempts).unwrap());
        let mut answers = 0;
        loop {
            match search.action() {
                Action::Finish(c) => return (search, c, answers),
                Action::Send(size) => {
                    answers += 1;
                    assert!(answers < 100_000, "search does not terminate");
                    search.step(path.answer(size));
                }
            }
        }
    }

    fn path(hops: &[(u32, bool)]) -> Path {
        Path {
            local_mtu: 1500,
            hops: hops.to_vec(),
            reachable: true,
        }
    }

    #[test_case(path(&[]), Conclusion::PathMtu { path_mtu: Mtu(1500), limit: None }, &[1500] ; "clean path 1500")]
    #[test_case(path(&[(1440, true)]), Conclusion::PathMtu { path_mtu: Mtu(1440), limit: Some(Limit::FragNeeded) }, &[1500, 1440] ; "frag needed at 1440")]
    #[test_case(path(&[(1440, false)]), Conclusion::PathMtu { path_mtu: Mtu(1440), limit: Some(Limit::Silence) }, &[1500, 68, 784, 1142, 1321, 1410, 1455, 1432, 1443, 1437, 1440, 1441] ; "black hole at 1440")]
    #[test_case(Path { reachable: false, ..path(&[]) }, Conclusion::Unreachable, &[1500, 68] ; "everything lost")]
    #[test_case(Path { local_mtu: 1400, ..path(&[]) }, Conclusion::PathMtu { path_mtu: Mtu(1400), limit: Some(Limit::LocalTooBig) }, &[1500, 1400] ; "local mtu smaller")]
    fn table(path: Path, expected: Conclusion, sizes: &[u32]) {
        let (search, conclusion, answers) = run(&path, 1500, 2);
        assert_eq!(conclusion, expected);
        let probed: Vec<u32> = search.steps().iter().map(|s| s.size.0).collect();
        assert_eq!(probed, sizes);
        let lost = search
            .steps()
            .iter()
            .filter(|s| s.verdict == Verdict::Lost)
            .count();
        assert_eq!(
            answers as usize,
            sizes.len() + lost,
            "lost sizes take 2 attempts"
        );
    }

    #[test]
    fn frag_needed_is_recorded_and_not_a_black_hole() {
        let (search, conclusion, _) = run(&path(&[(1440, true)]), 1500, 2);
        assert_eq!(search.frag_needed(), Some((ROUTER, Some(Mtu(1440)))));
        assert!(!conclusion.blackhole());
        let (search, conclusion, _) = run(&path(&[(1440, false)]), 1500, 2);
        assert_eq!(search.frag_needed(), None);
        assert!(conclusion.blackhole());
        assert_eq!(search.steps()[0].verdict.name(), "lost");
    }

    #[test]
    fn a_second_answer_after_the_end_is_ignored() {
        let mut search = PmtuSearch::new(Mtu(1500), Attempts::new(1).unwrap());
        assert_eq!(
            search.step(Answer::Reply).map(|s| s.verdict),
            Some(Verdict::Ok)
        );
        assert_eq!(search.step(Answer::Silence), None);
        assert!(matches!(search.state(), State::Done(_)));
    }

    #[test]
    fn lying_routers_are_believed_only_between_the_bounds() {
        // An MTU at or above the probed size, or below the floor, is ignored.
        let mut search = PmtuSearch::new(Mtu(1500), Attempts::new(1).unwrap());
        search.step(Answer::FragNeeded {
            from: ROUTER,
            mtu: Some(Mtu(9000)),
        });
        assert_eq!(search.action(), Action::Send(MIN_MTU));
        let mut search = PmtuSearch::new(Mtu(1500), Attempts::new(1).unwrap());
        search.step(Answer::FragNeeded {
            from: ROUTER,
            mtu: Some(Mtu(20)),
        });
        assert_eq!(search.action(), Action::Send(MIN_MTU));
    }

    #[test]
    fn attempts_bounds() {
        assert_eq!(Attempts::new(0), None);
        assert_eq!(Attempts::new(11), None);
        assert_eq!(Attempts::new(10).map(Attempts::get), Some(10));
    }

    fn hops() -> impl Strategy<Value = Vec<(u32, bool)>> {
        prop::collection::vec((68u32..=9000, any::<bool>()), 0..6)
    }

    proptest! {
        #[test]
        fn terminates_in_log_steps_and_agrees_with_the_path(
            ceiling in 68u32..=9000,
            local_mtu in 68u32..=9000,
            hops in hops(),
            attempts in 1u8..=3,
        ) {
            let path = Path { local_mtu, hops, reachable: true };
            let (search, conclusion, answers) = run(&path, ceiling, attempts);
            let bound = max_sizes(Mtu(ceiling));
            prop_assert!(u32::try_from(search.steps().len()).unwrap() <= bound);
            prop_assert!(answers <= bound * u32::from(attempts));
            let (mtu, silent) = path.truth(ceiling);
            match conclusion {
                Conclusion::PathMtu { path_mtu, .. } => {
                    prop_assert_eq!(path_mtu.0, mtu);
                    prop_assert_eq!(conclusion.blackhole(), silent);
                }
                Conclusion::Unreachable => prop_assert!(false, "reachable path reported unreachable"),
            }
        }

        #[test]
        fn an_unreachable_target_costs_two_sizes(ceiling in 0u32..=70_000, attempts in 1u8..=10) {
            let path = Path { local_mtu: 70_000, hops: vec![], reachable: false };
            let (search, conclusion, answers) = run(&path, ceiling, attempts);
            prop_assert_eq!(conclusion, Conclusion::Unreachable);
            prop_assert!(search.steps().len() <= 2);
            prop_assert!(answers <= 2 * u32::from(attempts));
        }
    }
}
