//! The probe's spans: each task is a `probe.task` span in the run's trace
//! (parent: the coordinator span that sent it, from `Task.trace_context`),
//! with fields `run_id`, `task_id`, `kind`, `trace_id`, and span events for
//! the moments worth seeing on a timeline ([`Moments`]).

use probemesh_proto::pb;
use probemesh_proto::pb::task_progress::Event;
use probemesh_telemetry::{set_parent, task_kind_name, trace_id};
use tracing::Span;
use tracing::field::Empty;

/// ICMP destination unreachable, code fragmentation needed (RFC 792).
const ICMP_UNREACHABLE: u32 = 3;
const ICMP_FRAG_NEEDED: u32 = 4;

/// Opens the span of `task`, joined to the coordinator's trace.
pub fn task_span(task: &pb::Task) -> Span {
    let span = tracing::info_span!(
        "probe.task",
        run_id = %task.run_id,
        task_id = %task.task_id,
        kind = task.kind.as_ref().map_or("none", task_kind_name),
        trace_id = Empty,
    );
    set_parent(&span, &task.trace_context);
    if let Some(id) = trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    span
}

/// Turns a task's progress into span events, each at most once per task:
/// `first packet lost` (a ping or UDP echo timeout, a lost path-MTU probe)
/// and `frag-needed received` (an ICMP fragmentation-needed, with the MTU it
/// carried and who sent it).
#[derive(Debug)]
pub struct Moments {
    span: Span,
    lost: bool,
    frag_needed: bool,
}

impl Moments {
    /// Watches progress for `span`.
    pub fn new(span: Span) -> Self {
        Self {
            span,
            lost: false,
            frag_needed: false,
        }
    }

    /// Looks at one progress message.
    pub fn observe(&mut self, progress: &pb::TaskProgress) {
        match &progress.event {
            Some(Event::PingReply(r)) => self.ping_reply(r),
            Some(Event::PingReplies(batch)) => {
                batch.replies.iter().for_each(|r| self.ping_reply(r))
            }
            Some(Event::UdpReply(r)) if r.status == "timeout" => self.lost(r.seq),
            Some(Event::PmtuStep(s)) => match s.outcome.as_str() {
                "lost" => self.lost(s.mtu),
                "frag_needed" => self.frag_needed(s.reported_mtu, &s.from),
                _ => {}
            },
            _ => {}
        }
    }

    fn ping_reply(&mut self, r: &pb::PingReply) {
        if r.status() == pb::ping_reply::Status::Timeout {
            self.lost(r.seq);
        }
        if r.mtu > 0 || (r.icmp_type == ICMP_UNREACHABLE && r.icmp_code == ICMP_FRAG_NEEDED) {
            self.frag_needed(r.mtu, &r.from);
        }
    }

    /// `at` is the echo sequence number, or the packet size for path MTU.
    fn lost(&mut self, at: u32) {
        if !std::mem::replace(&mut self.lost, true) {
            tracing::info!(parent: &self.span, at, "first packet lost");
        }
    }

    fn frag_needed(&mut self, mtu: u32, from: &str) {
        if !std::mem::replace(&mut self.frag_needed, true) {
            tracing::info!(parent: &self.span, mtu, from, "frag-needed received");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(event: Event) -> pb::TaskProgress {
        pb::TaskProgress {
            task_id: "t".into(),
            event: Some(event),
            ..Default::default()
        }
    }

    #[test]
    fn notes_the_first_loss_and_the_first_frag_needed() {
        let mut m = Moments::new(Span::none());
        m.observe(&progress(Event::PingReply(pb::PingReply {
            seq: 1,
            status: pb::ping_reply::Status::Reply.into(),
            ..Default::default()
        })));
        assert!(!m.lost && !m.frag_needed);
        m.observe(&progress(Event::PmtuStep(pb::PmtuStep {
            mtu: 1500,
            outcome: "frag_needed".into(),
            reported_mtu: 1440,
            from: "198.18.0.12".into(),
        })));
        assert!(m.frag_needed && !m.lost);
        m.observe(&progress(Event::PingReply(pb::PingReply {
            seq: 2,
            status: pb::ping_reply::Status::Timeout.into(),
            ..Default::default()
        })));
        assert!(m.lost);
    }

    #[test]
    fn a_loss_inside_a_batch_of_ping_replies_is_noted() {
        let mut m = Moments::new(Span::none());
        let reply = |seq, status: pb::ping_reply::Status| pb::PingReply {
            seq,
            status: status.into(),
            ..Default::default()
        };
        m.observe(&progress(Event::PingReplies(pb::PingReplyBatch {
            replies: vec![
                reply(1, pb::ping_reply::Status::Reply),
                reply(2, pb::ping_reply::Status::Timeout),
            ],
        })));
        assert!(m.lost && !m.frag_needed);
    }
}
