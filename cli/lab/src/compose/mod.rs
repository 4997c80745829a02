//! Composed lab faults (DESIGN §5, issue 12 item 4): a fault built from
//! parts, `MECHANISM[/PROTOCOL]@PLACE[,...]`, instead of picked from the
//! catalogue, and a seeded random draw from the same space.
//!
//! - `spec`: the grammar (mechanisms, protocols, places), canonical names
//!   and the refusals, each with its reason and way out;
//! - `truth`: THE table of ground truth, from mechanism family × place to
//!   the expected verdict (never per case);
//! - `actions`: what each part changes and its exact undo;
//! - `exercise`: the probe run, the plain-tool check and the sentences.
//!
//! Submodules import one way: `spec` is the base, `truth` and `actions`
//! import only it, `exercise` imports the three. A fault of several parts is accepted
//! only when the parts agree on the verdict and change different
//! namespaces, so every symptom has one cause and every undo is exact.
//! `docs/lab-faults.md` documents the grammar and the table.
//!
//! Pure: it returns [`Action`]s, the lifecycle executes them.

mod actions;
mod exercise;
mod spec;
mod truth;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use probemesh_model::inventory::InvalidInventory;
use serde::Serialize;

use crate::faults::{Action, Expect, Fault, FaultInfo, UnknownFault};
use crate::rules::ProxyMode;

pub use actions::{LOSS_PERCENT, MISSING_POD_IP, WRONG_PORT, second_address};
pub use exercise::{DNS_NAME, Exercise};
pub use spec::{
    FragNeeded, Hook, InvalidSpec, Mechanism, Part, Place, Protocol, RejectWith, RouteKind,
    mechanisms, places,
};
pub use truth::{Family, Scope, TRUTH, TruthRow};

/// A composed fault: one or more parts that agree on the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    parts: Vec<Part>,
}

/// The `meshctl probe` run that exercises a composed fault (the catalogue's
/// `probe`, owned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRun {
    /// `--from`.
    pub from: String,
    /// `--to`.
    pub to: String,
    /// `--size`: ICMP payload bytes.
    pub size: u16,
}

/// A composed fault as `meshctl lab fault compose|random` prints it: the
/// catalogue's fields (`lab fault --list`), built from the parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposedInfo {
    /// The canonical spec; `lab fault compose NAME` makes it again.
    pub name: String,
    /// What a user sees.
    pub symptom: String,
    /// What the lab changes, part by part.
    pub mechanism: String,
    /// A plain-tool command on the host that shows the symptom.
    pub observe: String,
    /// The probe run that should reveal it.
    pub probe: ProbeRun,
    /// The verdict it should get (from [`TRUTH`]).
    pub expect: Expect,
}

impl From<FaultInfo> for ComposedInfo {
    fn from(i: FaultInfo) -> Self {
        ComposedInfo {
            name: i.name.to_owned(),
            symptom: i.symptom.to_owned(),
            mechanism: i.mechanism.to_owned(),
            observe: i.observe.to_owned(),
            probe: ProbeRun {
                from: i.probe.from.to_owned(),
                to: i.probe.to.to_owned(),
                size: i.probe.size,
            },
            expect: i.expect,
        }
    }
}

impl ComposedInfo {
    /// The probe run as a command line.
    pub fn probe_command(&self) -> String {
        format!(
            "meshctl probe --from {} --to {} --size {}",
            self.probe.from, self.probe.to, self.probe.size
        )
    }

    /// The expected verdict, `class` or `class/cause`.
    pub fn expected(&self) -> String {
        shown(&self.expect)
    }
}

impl LabFault {
    /// Its entry: what `lab fault --list` (catalogue) or `lab fault compose`
    /// prints.
    pub fn info(&self) -> ComposedInfo {
        match self {
            LabFault::Catalogue(f) => f.info().into(),
            LabFault::Composed(c) => c.info(),
        }
    }
}

/// One step of splitmix64.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An index below `len` (> 0) from a random word.
fn pick(word: u64, len: usize) -> usize {
    let len = u64::try_from(len).unwrap_or(1).max(1);
    usize::try_from(word % len).unwrap_or(0)
}

fn expect_of(row: &TruthRow) -> Expect {
    Expect {
        class: row.class,
        cause: row.cause,
    }
}

fn shown(e: &Expect) -> String {
    match e.cause {
        Some(c) => format!("{}/{c}", e.class),
        None => e.class.to_string(),
    }
}

impl Composed {
    /// A fault of these parts, if each has a verdict in [`TRUTH`], they
    /// agree on it and they change different namespaces.
    pub fn new(parts: Vec<Part>) -> Result<Composed, InvalidSpec> {
        let first = *parts.first().ok_or(InvalidSpec::Empty)?;
        for (i, a) in parts.iter().enumerate() {
            let Some(truth) = a.truth() else {
                return Err(InvalidSpec::Refused {
                    part: a.to_string(),
                    reason: "it has no single honest verdict in the ground-truth table",
                });
            };
            for b in &parts[i + 1..] {
                let theirs = b.namespaces();
                if let Some(netns) = a.namespaces().into_iter().find(|n| theirs.contains(n)) {
                    return Err(InvalidSpec::Clash {
                        a: a.to_string(),
                        b: b.to_string(),
                        netns,
                    });
                }
            }
            let (ea, eb) = (expect_of(truth), first.truth().map(expect_of));
            if Some(&ea) != eb.as_ref() {
                return Err(InvalidSpec::Disagree {
                    a: first.to_string(),
                    ea: eb.as_ref().map(shown).unwrap_or_default(),
                    b: a.to_string(),
                    eb: shown(&ea),
                });
            }
        }
        Ok(Composed { parts })
    }

    /// Every accepted single part, in a fixed order (mechanisms, then
    /// protocols, then places).
    pub fn space() -> Vec<Part> {
        let mut all = Vec::new();
        for m in mechanisms() {
            let protocols: &[Option<Protocol>] = if m.filters() {
                &[Some(Protocol::Icmp), Some(Protocol::Tcp)]
            } else {
                &[None]
            };
            for &proto in protocols {
                for place in places() {
                    if let Ok(p) = Part::new(m, proto, place)
                        && p.truth().is_some()
                    {
                        all.push(p);
                    }
                }
            }
        }
        all
    }

    /// The single-part fault `random --seed SEED` draws: the same seed, the
    /// same fault. A family of [`TRUTH`] is drawn first, then a part of it
    /// (splitmix64 of the seed), so that a sample spreads over the verdicts
    /// rather than over the many places a filter rule fits.
    pub fn random(seed: u64) -> Composed {
        Composed::random_in(&Composed::space(), seed)
    }

    /// [`Composed::random`] over a space already built (non-empty).
    fn random_in(space: &[Part], seed: u64) -> Composed {
        let mut families: Vec<Family> = Vec::new();
        for p in space {
            if !families.contains(&p.family()) {
                families.push(p.family());
            }
        }
        let first = splitmix64(seed);
        let family = families[pick(first, families.len())];
        let of: Vec<Part> = space
            .iter()
            .copied()
            .filter(|p| p.family() == family)
            .collect();
        Composed {
            parts: vec![of[pick(splitmix64(first), of.len())]],
        }
    }

    /// The parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// What `lab fault compose|random` prints: the first part's probe run,
    /// symptom and verdict (the parts agree on it), every part's change.
    pub fn info(&self) -> ComposedInfo {
        let first = self.parts[0];
        let ex = first.exercise();
        ComposedInfo {
            name: self.to_string(),
            symptom: first.symptom(),
            mechanism: self
                .parts
                .iter()
                .map(|p| p.describe())
                .collect::<Vec<_>>()
                .join("; "),
            observe: ex.observe,
            probe: ProbeRun {
                from: ex.from,
                to: ex.to,
                size: ex.size,
            },
            expect: first.truth().map(expect_of).unwrap_or(Expect {
                class: probemesh_model::verdict::Class::Inconclusive,
                cause: None,
            }),
        }
    }

    /// The changes that inject the fault into a healthy lab whose
    /// kube-proxy runs in `mode`.
    pub fn apply(&self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(p.apply(mode)?);
        }
        Ok(all)
    }

    /// The changes that restore the baseline, last part first.
    pub fn clear(&self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        let mut all = Vec::new();
        for p in self.parts.iter().rev() {
            all.extend(p.clear(mode)?);
        }
        Ok(all)
    }
}

impl FromStr for Composed {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Part>, _>>()?;
        Composed::new(parts)
    }
}

impl fmt::Display for Composed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.parts.iter().map(Part::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// A fault the lab can hold: from the catalogue or composed. The name the
/// state file records tells them apart: composed names hold `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabFault {
    /// A catalogue fault.
    Catalogue(Fault),
    /// A composed fault.
    Composed(Composed),
}

/// A fault name that is neither in the catalogue nor a valid spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownLabFault {
    /// Not a catalogue name.
    #[error(transparent)]
    Catalogue(#[from] UnknownFault),
    /// Not a valid composed spec.
    #[error(transparent)]
    Composed(#[from] InvalidSpec),
}

impl FromStr for LabFault {
    type Err = UnknownLabFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('@') {
            Ok(LabFault::Composed(s.parse()?))
        } else {
            Ok(LabFault::Catalogue(s.parse()?))
        }
    }
}

impl fmt::Display for LabFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabFault::Catalogue(c) => c.fmt(f),
            LabFault::Composed(c) => c.fmt(f),
        }
    }
}

impl From<Fault> for LabFault {
    fn from(f: Fault) -> Self {
        LabFault::Catalogue(f)
    }
}

impl LabFault {
    /// The changes that inject it into a lab whose kube-proxy runs in
    /// `mode`.
    pub fn apply(&self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        match self {
            LabFault::Catalogue(c) => c.apply(mode),
            LabFault::Composed(c) => c.apply(mode),
        }
    }
    /// The changes that undo it.
    pub fn clear(&self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        match self {
            LabFault::Catalogue(c) => c.clear(mode),
            LabFault::Composed(c) => c.clear(mode),
        }
    }
}

impl From<Composed> for LabFault {
    fn from(c: Composed) -> Self {
        LabFault::Composed(c)
    }
}
