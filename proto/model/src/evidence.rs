//! A verdict's evidence and the claims its summary makes from it (DESIGN §5):
//! each evidence [`Item`] says where it came from ([`Source`]: a check of
//! the run, a captured packet, an inventory object), and the summary is a
//! list of [`Claim`]s, each citing the items that support it. [`unsupported`]
//! walks a verdict and returns every claim without its evidence, so a
//! sentence about a check that did not run cannot pass a test.
//!
//! Not the rules that make claims (the coordinator's diagnosis) and not the
//! wire (its conversions are in the `grpc` module).

use std::fmt;

use crate::check::{CheckName, Status};

/// Where an evidence item comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A check of the run, by name and ends (as in the run's checks).
    Check {
        /// Which check.
        name: CheckName,
        /// Who ran it.
        from: String,
        /// What it was aimed at.
        to: String,
    },
    /// A capture on one observer interface.
    Capture {
        /// The observing probe.
        probe: String,
        /// Its interface.
        interface: String,
        /// 1-based packet number in that interface's capture, when the
        /// observation is about one packet.
        packet: Option<u64>,
    },
    /// An object of the cluster inventory.
    Inventory {
        /// `pod`, `node`, `service`, ...
        kind: String,
        /// Empty for cluster-scoped kinds.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Check { name, from, to } => write!(f, "check {name} {from} → {to}"),
            Source::Capture {
                probe,
                interface,
                packet,
            } => {
                write!(f, "capture {probe}/{interface}")?;
                match packet {
                    Some(n) => write!(f, " packet {n}"),
                    None => Ok(()),
                }
            }
            Source::Inventory {
                kind,
                namespace,
                name,
            } => write!(f, "inventory {kind}/{namespace}/{name}"),
        }
    }
}

/// One observation behind a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The probe that observed it.
    pub probe: String,
    /// What was observed, for people.
    pub observation: String,
    /// Where it comes from, for people (older records carry only this).
    pub artifact: String,
    /// Where it comes from, typed.
    pub source: Source,
}

/// One clause of a summary and the evidence items that support it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The clause.
    pub text: String,
    /// Indices into the verdict's evidence.
    pub evidence: Vec<usize>,
}

impl Claim {
    /// A clause supported by the items at `evidence`.
    pub fn new(text: impl Into<String>, evidence: &[usize]) -> Self {
        Self {
            text: text.into(),
            evidence: evidence.to_vec(),
        }
    }
}

/// The summary the claims make: their texts joined by `"; "`.
pub fn summary(claims: &[Claim]) -> String {
    claims
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A check of the run as the checker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCheck<'a> {
    /// Which check.
    pub name: CheckName,
    /// Who ran it.
    pub from: &'a str,
    /// What it was aimed at.
    pub to: &'a str,
    /// How it ended.
    pub status: Status,
}

/// A verdict as the checker reads it.
#[derive(Debug, Clone, Copy)]
pub struct Stated<'a> {
    /// The summary printed.
    pub summary: &'a str,
    /// Its clauses.
    pub claims: &'a [Claim],
    /// Each evidence item's source (`None`: the item says not where it
    /// came from).
    pub sources: &'a [Option<&'a Source>],
    /// The run's checks.
    pub checks: &'a [RunCheck<'a>],
}

/// A claim or evidence item the run does not back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// The summary is not the claims joined: some of it is backed by no claim.
    #[error("the summary {summary:?} is not its claims joined ({claims:?})")]
    SummaryBeyondClaims {
        /// The summary.
        summary: String,
        /// The claims joined.
        claims: String,
    },
    /// A claim cites no evidence.
    #[error("claim {claim:?} cites no evidence")]
    NoEvidence {
        /// The claim.
        claim: String,
    },
    /// A claim cites an item the verdict does not have.
    #[error("claim {claim:?} cites evidence #{index}, which does not exist")]
    Dangling {
        /// The claim.
        claim: String,
        /// The missing index.
        index: usize,
    },
    /// An evidence item without a source.
    #[error("evidence #{index} says not where it came from")]
    NoSource {
        /// Its index.
        index: usize,
    },
    /// An evidence item from a check that is not among the run's checks or
    /// did not run.
    #[error("evidence #{index} comes from {cited}, which {why}")]
    CheckNotRun {
        /// Its index.
        index: usize,
        /// The source it names.
        cited: String,
        /// `is not in the run` or `was skipped`.
        why: &'static str,
    },
    /// A path step observed by a check that is not in the run or was skipped.
    #[error("path step {step} was observed by {cited}, which {why}")]
    StepCheckNotRun {
        /// The step's index.
        step: usize,
        /// The source it names.
        cited: String,
        /// `is not in the run` or `was skipped`.
        why: &'static str,
    },
    /// A path step cites an evidence item the verdict does not have.
    #[error("path step {step} cites evidence #{index}, which does not exist")]
    StepDangling {
        /// The step's index.
        step: usize,
        /// The missing index.
        index: usize,
    },
    /// A path step names a blocker without citing the evidence for it.
    #[error("path step {step} names {resource} with no evidence")]
    StepResourceUnbacked {
        /// The step's index.
        step: usize,
        /// The resource it names.
        resource: String,
    },
}

/// Every claim of `v` without its evidence and every evidence item whose
/// check did not run; empty when all is backed.
pub fn unsupported(v: &Stated<'_>) -> Vec<Unsupported> {
    let mut out = Vec::new();
    let joined = summary(v.claims);
    if joined != v.summary {
        out.push(Unsupported::SummaryBeyondClaims {
            summary: v.summary.to_owned(),
            claims: joined,
        });
    }
    for c in v.claims {
        if c.evidence.is_empty() {
            out.push(Unsupported::NoEvidence {
                claim: c.text.clone(),
            });
        }
        for &index in c.evidence.iter().filter(|i| **i >= v.sources.len()) {
            out.push(Unsupported::Dangling {
                claim: c.text.clone(),
                index,
            });
        }
    }
    for (index, source) in v.sources.iter().enumerate() {
        let Some(source) = source else {
            out.push(Unsupported::NoSource { index });
            continue;
        };
        if let Err(why) = check_ran(v.checks, source) {
            out.push(Unsupported::CheckNotRun {
                index,
                cited: source.to_string(),
                why,
            });
        }
    }
    out
}

/// Whether `source`, when it is a check, is a check of the run that ran:
/// why not otherwise.
pub(crate) fn check_ran(checks: &[RunCheck<'_>], source: &Source) -> Result<(), &'static str> {
    let Source::Check { name, from, to } = source else {
        return Ok(());
    };
    match checks
        .iter()
        .find(|c| c.name == *name && c.from == from && c.to == to)
    {
        None => Err("is not in the run"),
        Some(c) if c.status == Status::Skipped => Err("was skipped"),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp() -> Source {
        Source::Check {
            name: CheckName::Icmp,
            from: "cloudvm-1".into(),
            to: "198.18.0.12".into(),
        }
    }

    fn tcp() -> Source {
        Source::Check {
            name: CheckName::TcpConnect,
            from: "cloudvm-1".into(),
            to: "198.18.0.12:8080".into(),
        }
    }

    const CHECKS: &[RunCheck<'static>] = &[
        RunCheck {
            name: CheckName::Icmp,
            from: "cloudvm-1",
            to: "198.18.0.12",
            status: Status::Fail,
        },
        RunCheck {
            name: CheckName::TcpConnect,
            from: "cloudvm-1",
            to: "198.18.0.12:8080",
            status: Status::Skipped,
        },
    ];

    #[test]
    fn claims_backed_by_checks_that_ran_pass() {
        let claims = [Claim::new("ping to 198.18.0.12 gets no reply", &[0])];
        let s = icmp();
        let v = Stated {
            summary: "ping to 198.18.0.12 gets no reply",
            claims: &claims,
            sources: &[Some(&s)],
            checks: CHECKS,
        };
        assert_eq!(unsupported(&v), vec![]);
    }

    #[test]
    fn a_planted_claim_about_a_check_that_did_not_run_is_caught() {
        let claims = [
            Claim::new("ping gets no reply", &[0]),
            Claim::new("the host is up (TCP connects)", &[1]),
        ];
        let (a, b) = (icmp(), tcp());
        let v = Stated {
            summary: "ping gets no reply; the host is up (TCP connects)",
            claims: &claims,
            sources: &[Some(&a), Some(&b)],
            checks: CHECKS,
        };
        assert_eq!(
            unsupported(&v),
            vec![Unsupported::CheckNotRun {
                index: 1,
                cited: "check tcp_connect cloudvm-1 → 198.18.0.12:8080".into(),
                why: "was skipped",
            }]
        );
    }

    #[test]
    fn a_sentence_outside_the_claims_or_without_evidence_is_caught() {
        let claims = [
            Claim::new("ping gets no reply", &[]),
            Claim::new("so it is down", &[3]),
        ];
        let a = icmp();
        let v = Stated {
            summary: "ping gets no reply; so it is down; the host is up",
            claims: &claims,
            sources: &[Some(&a), None],
            checks: &[],
        };
        let found = unsupported(&v);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(matches!(found[0], Unsupported::SummaryBeyondClaims { .. }));
        assert!(matches!(found[1], Unsupported::NoEvidence { .. }));
        assert!(matches!(found[2], Unsupported::Dangling { index: 3, .. }));
        assert!(matches!(
            found[3],
            Unsupported::CheckNotRun {
                index: 0,
                why: "is not in the run",
                ..
            }
        ));
        assert_eq!(found[4], Unsupported::NoSource { index: 1 });
    }

    #[test]
    fn sources_read_as_the_text_report_prints_them() {
        assert_eq!(icmp().to_string(), "check icmp cloudvm-1 → 198.18.0.12");
        let cap = Source::Capture {
            probe: "node-2".into(),
            interface: "eth0".into(),
            packet: Some(7),
        };
        assert_eq!(cap.to_string(), "capture node-2/eth0 packet 7");
    }
}
