//! The field's rules for reading an mtr report, applied to one report.
//! Sans-IO. The rules:
//!
//! 1. Loss at a hop with no loss at some hop after it is ICMP rate limiting
//!    (or a router that deprioritises answering): ignore it.
//! 2. Loss that continues from some hop to the last hop is real; judge it by
//!    the last hops (the last hop's Loss% is the loss of the path). That hop
//!    is `loss_from_hop`.
//! 3. A destination that never answered: the path ends at the last hop that
//!    did; judge by the last hops.
//! 4. A high StDev (at least [`HIGH_STDEV_MS`] and at least half the Avg)
//!    means the Avg hides spikes: look at Best and Wrst.

use std::net::Ipv4Addr;

use super::stats::HopFigures;

/// StDev from which a hop's round trips count as spiky, ms (and it must be
/// at least half the hop's Avg).
pub const HIGH_STDEV_MS: f64 = 1.0;

/// One displayed hop, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hop {
    /// TTL of the hop, 1-based.
    pub ttl: u8,
    /// The address that answered last; `None` when none did (`???`).
    pub host: Option<Ipv4Addr>,
    /// Its figures.
    pub figures: HopFigures,
}

/// The rules' verdict on one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// One sentence per finding, in hop order, then the summary.
    pub lines: Vec<String>,
    /// First hop of loss that continues to the last hop; `None` when there
    /// is none.
    pub loss_from_hop: Option<u8>,
}

fn name(hop: &Hop) -> String {
    hop.host.map_or_else(|| "???".to_owned(), |h| h.to_string())
}

/// Applies the rules to the displayed hops of a report whose destination
/// answered (`reached`) or not.
pub fn read(hops: &[Hop], reached: bool) -> Reading {
    let mut lines = Vec::new();
    let Some(last) = hops.last() else {
        return Reading {
            lines: vec!["no hop answered: the path is dead from the first hop, or ICMP is filtered; judge by the first hop".to_owned()],
            loss_from_hop: Some(1),
        };
    };
    // Start of the run of lossy hops that reaches the last hop.
    let suffix = hops
        .iter()
        .rposition(|h| h.figures.loss_pct <= 0.0)
        .map_or(0, |i| i + 1);
    let loss_from_hop = hops.get(suffix).map(|h| h.ttl);
    for hop in &hops[..suffix] {
        if hop.figures.loss_pct > 0.0 {
            lines.push(format!(
                "loss at hop {} ({}, {:.1}%) does not continue to the next hops: ICMP rate limiting, ignore",
                hop.ttl,
                name(hop),
                hop.figures.loss_pct
            ));
        }
    }
    for hop in hops {
        let f = &hop.figures;
        if f.received >= 2 && f.stdev_ms >= HIGH_STDEV_MS && f.stdev_ms * 2.0 >= f.avg_ms {
            lines.push(format!(
                "hop {} ({}): StDev {:.1} ms is high against Avg {:.1} ms: look at Best {:.1} / Wrst {:.1} ms",
                hop.ttl,
                name(hop),
                f.stdev_ms,
                f.avg_ms,
                f.best_ms,
                f.worst_ms
            ));
        }
    }
    if let Some(from) = loss_from_hop {
        lines.push(format!(
            "loss continues to the last hop from hop {from}: real loss, judge by the last hop ({}, {:.1}%)",
            name(last),
            last.figures.loss_pct
        ));
    }
    if !reached {
        lines.push(format!(
            "the destination did not answer: the path ends after hop {} ({}); judge by the last hops",
            last.ttl,
            name(last)
        ));
    } else if loss_from_hop.is_none() {
        lines.push("no loss at the destination: the path is clean".to_owned());
    }
    Reading {
        lines,
        loss_from_hop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn hop(ttl: u8, loss: f64, stdev: f64) -> Hop {
        Hop {
            ttl,
            host: (loss < 100.0).then(|| Ipv4Addr::new(198, 18, 0, ttl)),
            figures: HopFigures {
                sent: 10,
                received: 10,
                loss_pct: loss,
                last_ms: 1.0,
                avg_ms: 1.0,
                best_ms: 0.5,
                worst_ms: 1.0 + stdev * 3.0,
                stdev_ms: stdev,
            },
        }
    }

    #[test_case(&[0.0, 0.0, 0.0], true, None, &["no loss at the destination: the path is clean"] ; "clean")]
    #[test_case(&[0.0, 60.0, 0.0], true, None, &["loss at hop 2 (198.18.0.2, 60.0%) does not continue to the next hops: ICMP rate limiting, ignore", "no loss at the destination: the path is clean"] ; "rate limiting")]
    #[test_case(&[0.0, 100.0, 0.0], true, None, &["loss at hop 2 (???, 100.0%) does not continue to the next hops: ICMP rate limiting, ignore", "no loss at the destination: the path is clean"] ; "silent router")]
    #[test_case(&[0.0, 20.0, 30.0, 20.0], true, Some(2), &["loss continues to the last hop from hop 2: real loss, judge by the last hop (198.18.0.4, 20.0%)"] ; "real loss")]
    #[test_case(&[50.0, 0.0, 10.0], true, Some(3), &["loss at hop 1 (198.18.0.1, 50.0%) does not continue to the next hops: ICMP rate limiting, ignore", "loss continues to the last hop from hop 3: real loss, judge by the last hop (198.18.0.3, 10.0%)"] ; "both")]
    #[test_case(&[0.0, 100.0], false, Some(2), &["loss continues to the last hop from hop 2: real loss, judge by the last hop (???, 100.0%)", "the destination did not answer: the path ends after hop 2 (???); judge by the last hops"] ; "not reached")]
    fn loss_rules(losses: &[f64], reached: bool, from: Option<u8>, lines: &[&str]) {
        let hops: Vec<Hop> = (1u8..).zip(losses).map(|(t, &l)| hop(t, l, 0.0)).collect();
        let r = read(&hops, reached);
        assert_eq!(r.loss_from_hop, from);
        assert_eq!(r.lines, lines);
    }

    #[test]
    fn high_stdev_points_at_best_and_worst() {
        let r = read(&[hop(1, 0.0, 0.2), hop(2, 0.0, 4.0)], true);
        assert_eq!(
            r.lines[0],
            "hop 2 (198.18.0.2): StDev 4.0 ms is high against Avg 1.0 ms: look at Best 0.5 / Wrst 13.0 ms"
        );
        assert_eq!(r.lines.len(), 2);
    }

    #[test]
    fn no_hops_at_all() {
        let r = read(&[], false);
        assert_eq!(r.loss_from_hop, Some(1));
        assert_eq!(r.lines.len(), 1);
    }
}
