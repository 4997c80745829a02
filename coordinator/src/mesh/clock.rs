//! Clocks of probes other coordinators hold: one NTP-style burst per owner
//! over `Peer.Clock` measures the owner's clock against this one, its first
//! exchange makes the owner burst on the probes (idle ones are exchanged
//! rarely) and the later replies carry the owner's fresh estimate of each, and the two chain
//! ([`crate::clock::Sample::chain`]) into the probe's clock here, its error
//! bound covering both hops. Measured on demand, right before a run reads
//! the clocks (capture arming, a diagnosis's clock step): idle it costs
//! nothing.

use std::collections::BTreeMap;

use probemesh_proto::pb;
use tonic::transport::Channel;

use crate::clock::{ClockPath, Exchange, Sample};
use crate::clock_sync::CLOCK_BURST_WAIT;
use crate::state::Coordinator;

/// Exchanges per owner per refresh; the one with the least delay is kept.
const BURST: usize = 4;
/// Bound on one exchange; an owner that misses it is not asked again in
/// this burst, so a dead owner delays a run by this much at most.
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// Most probe names one `Peer.Clock` request may carry (the server's bound).
pub const MAX_CLOCK_NAMES: usize = 1_000;

/// Measures the clocks of those of `probes` other coordinators hold and
/// stores them in the registry (probes held here are left alone).
pub async fn refresh(state: &Coordinator, probes: &[String]) {
    let mut owners: BTreeMap<String, (Channel, Vec<String>)> = BTreeMap::new();
    {
        let registry = state.registry();
        for probe in probes {
            if let Some(r) = registry.remote(probe) {
                owners
                    .entry(r.owner.coordinator.clone())
                    .or_insert_with(|| (r.peer.clone(), Vec::new()))
                    .1
                    .push(probe.clone());
            }
        }
    }
    for (owner, (peer, names)) in owners {
        for chunk in names.chunks(MAX_CLOCK_NAMES) {
            match burst(state, peer.clone(), chunk).await {
                Ok(clocks) => {
                    let mut registry = state.registry();
                    for (probe, sample) in clocks {
                        registry.set_remote_clock(&probe, sample);
                    }
                }
                Err(reason) => {
                    tracing::warn!(%owner, %reason, "no clock exchange with the owning coordinator");
                }
            }
        }
    }
}

/// One burst towards an owner: the first exchange asks it for a fresh burst
/// with the probes ([`crate::clock_sync::clock_burst`] there), the others,
/// once that burst's samples are in, read them; the least-delay exchange
/// gives the owner's clock here, chained with each probe's fresh estimate.
async fn burst(
    state: &Coordinator,
    peer: Channel,
    names: &[String],
) -> Result<Vec<(String, Sample)>, String> {
    let mut client = pb::peer_client::PeerClient::new(peer);
    let (mut best, first) = exchange(state, &mut client, names, true, 0).await?;
    tokio::time::sleep(CLOCK_BURST_WAIT).await;
    let mut held = Err(String::from("no exchange after the burst completed"));
    for _ in 1..BURST {
        match exchange(state, &mut client, names, false, first.t2_ns).await {
            Ok((sample, reply)) => {
                if sample.delay_ns < best.delay_ns {
                    best = sample;
                }
                held = Ok(reply.probes);
            }
            Err(reason) => {
                held = held.or(Err(reason));
                break;
            }
        }
    }
    Ok(chain(best, held?))
}

/// One `Peer.Clock` exchange: the owner's clock against this one, and its reply.
async fn exchange(
    state: &Coordinator,
    client: &mut pb::peer_client::PeerClient<Channel>,
    names: &[String],
    burst: bool,
    fresh_since_ns: i64,
) -> Result<(Sample, pb::PeerClockReply), String> {
    let t1_ns = state.clock.now_unix_ns();
    let request = pb::PeerClockRequest {
        t1_ns,
        probes: names.to_vec(),
        burst,
        fresh_since_ns,
    };
    let reply = match tokio::time::timeout(EXCHANGE_TIMEOUT, client.clock(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return Err(status.message().to_owned()),
        Err(_) => return Err(format!("no reply within {EXCHANGE_TIMEOUT:?}")),
    };
    if reply.t1_ns != t1_ns {
        return Err("the reply answers another request".into());
    }
    let exchange = Exchange {
        path: ClockPath::Peer,
        t1_ns,
        t2_ns: reply.t2_ns,
        t3_ns: reply.t3_ns,
        t4_ns: state.clock.now_unix_ns(),
    };
    let sample = Sample::try_from(exchange).map_err(|e| e.to_string())?;
    Ok((sample, reply))
}

/// The chained clock of each probe the owner reported, against `peer` (the
/// owner's clock here).
fn chain(peer: Sample, held: Vec<pb::PeerProbeClock>) -> Vec<(String, Sample)> {
    held.into_iter()
        .filter(|c| c.delay_ns >= 0)
        .map(|c| {
            let held = Sample {
                offset_ns: c.offset_ns,
                delay_ns: c.delay_ns,
                path: ClockPath::Relay,
            };
            (c.probe, peer.chain(held))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reported_probe_gets_the_sum_and_negative_delays_are_dropped() {
        let peer = Sample {
            offset_ns: 1_000,
            delay_ns: 200_000,
            path: ClockPath::Peer,
        };
        let held = vec![
            pb::PeerProbeClock {
                probe: "node-1".into(),
                offset_ns: 10_000,
                delay_ns: 40_000,
            },
            pb::PeerProbeClock {
                probe: "forged".into(),
                offset_ns: 0,
                delay_ns: -1,
            },
        ];
        let chained = chain(peer, held);
        assert_eq!(chained.len(), 1);
        let (name, s) = &chained[0];
        assert_eq!(name, "node-1");
        assert_eq!((s.offset_ns, s.error_ns()), (11_000, 120_000));
    }
}
