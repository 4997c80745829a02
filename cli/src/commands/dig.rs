//! `meshctl dig`: DNS resolution run on a probe (or inside a pod's network
//! namespace through it), asking resolv.conf's servers and any given ones,
//! printed the way `dig` prints it, with `-o json`. Node facts are
//! `meshctl inspect`.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;
use probemesh_proto::pb::task_result::Outcome;
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};
use crate::output::{OutputFormat, emit};

use super::{ErrorView, Finished, micros, ns_to_ms, run_once};

/// `meshctl dig`.
#[derive(Debug, clap::Args)]
pub struct DigArgs {
    /// Probe to resolve from: NAME or NAME@pod:NAMESPACE/POD (inside the pod's namespace).
    #[arg(long)]
    pub from: String,
    /// Name to resolve; a trailing dot makes it absolute (no search list).
    pub name: String,
    /// Ask this server (IP or IP:PORT) instead of the namespace's resolv.conf; repeatable.
    #[arg(long = "server", value_name = "IP[:PORT]")]
    pub servers: Vec<String>,
    /// Ask resolv.conf's servers and the --server ones, and say which fails.
    #[arg(long)]
    pub compare: bool,
    /// Record type (A, AAAA, CNAME, MX, SRV, TXT, ...).
    #[arg(short = 't', long = "type", default_value = "A")]
    pub record_type: String,
    /// Per-query timeout (at most 10s).
    #[arg(long, default_value = "2s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
}

/// The JSON shape of `meshctl dig -o json`.
#[derive(Debug, Serialize)]
pub struct DigReport {
    run_id: String,
    trace_id: String,
    from: String,
    name: String,
    record_type: String,
    resolv_conf_servers: Vec<String>,
    search: Vec<String>,
    servers: Vec<ServerView>,
    conclusion: String,
    error: Option<ErrorView>,
}

/// One server's answer.
#[derive(Debug, Serialize)]
pub struct ServerView {
    server: String,
    source: String,
    rcode: String,
    answers: Vec<String>,
    latency_ms: f64,
    detail: String,
}

/// Runs `meshctl dig`.
pub async fn dig(args: DigArgs, endpoint: &Endpoint, output: OutputFormat) -> Result<u8, Failure> {
    let request = pb::RunRequest {
        from: args.from.clone(),
        kind: Some(Kind::Dns(pb::DnsTask {
            name: args.name.clone(),
            servers: args.servers.clone(),
            compare: args.compare,
            timeout_us: micros(args.timeout),
            record_type: args.record_type.to_ascii_uppercase(),
        })),
    };
    let finished = run_once(endpoint, request).await?;
    let report = DigReport::new(&args, finished);
    emit(output, &report, || report.lines())?;
    Ok(report.exit_code())
}

impl DigReport {
    fn new(args: &DigArgs, finished: Finished) -> Self {
        let error = ErrorView::from_outcome(finished.outcome.as_ref());
        let result = match finished.outcome {
            Some(Outcome::Dns(d)) => d,
            _ => pb::DnsResult::default(),
        };
        Self {
            run_id: finished.run_id,
            trace_id: finished.trace_id,
            from: args.from.clone(),
            name: args.name.clone(),
            record_type: args.record_type.to_ascii_uppercase(),
            resolv_conf_servers: result.resolv_conf_servers,
            search: result.search,
            servers: result
                .answers
                .into_iter()
                .map(|a| ServerView {
                    server: a.server,
                    source: a.source,
                    rcode: a.rcode,
                    answers: a.answers,
                    latency_ms: ns_to_ms(a.latency_ns),
                    detail: a.detail,
                })
                .collect(),
            conclusion: result.conclusion,
            error,
        }
    }

    /// dig's header, one block per server, and the conclusion.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "; <<>> meshctl dig <<>> {} {} from {}",
            self.name, self.record_type, self.from
        )];
        if !self.resolv_conf_servers.is_empty() {
            lines.push(format!(
                ";; resolv.conf: nameserver {}{}",
                self.resolv_conf_servers.join(", "),
                if self.search.is_empty() {
                    String::new()
                } else {
                    format!("; search {}", self.search.join(" "))
                }
            ));
        }
        for s in &self.servers {
            lines.push(String::new());
            lines.push(format!(
                ";; SERVER: {} ({})  status: {}  Query time: {:.0} msec",
                dig_server(&s.server),
                s.source,
                s.rcode,
                s.latency_ms
            ));
            if !s.detail.is_empty() {
                lines.push(format!(";; {}", s.detail));
            }
            if !s.answers.is_empty() {
                lines.push(";; ANSWER SECTION:".into());
                lines.extend(s.answers.iter().map(|a| a.replace(' ', "\t")));
            }
        }
        if let Some(e) = &self.error {
            lines.push(format!("dig failed on probe {}: {}", self.from, e.message));
        } else if !self.conclusion.is_empty() {
            lines.push(String::new());
            lines.push(format!(";; CONCLUSION: {}", self.conclusion));
        }
        lines.push(format!("run {} · trace {}", self.run_id, self.trace_id));
        lines
    }

    /// 0 every server answered NOERROR; 1 any timed out, failed or said
    /// NXDOMAIN; 2 bad input; 3 the probe could not do it.
    pub fn exit_code(&self) -> u8 {
        if let Some(e) = &self.error {
            return e.exit_code();
        }
        if self.servers.is_empty() {
            exit::INCONCLUSIVE
        } else if self.servers.iter().all(|s| s.rcode == "NOERROR") {
            exit::OK
        } else {
            exit::FAULT
        }
    }
}

/// `198.18.0.1#53`, as dig prints a server.
fn dig_server(server: &str) -> String {
    match server.rsplit_once(':') {
        Some((ip, port)) => format!(
            "{}#{port}",
            ip.trim_start_matches('[').trim_end_matches(']')
        ),
        None => server.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dig_args() -> DigArgs {
        DigArgs {
            from: "node-3@pod:default/client-3".into(),
            name: "web.default.svc.cluster.local".into(),
            servers: vec!["198.18.0.1".into()],
            compare: true,
            record_type: "a".into(),
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn dig_prints_servers_answers_and_the_conclusion() {
        let result = pb::DnsResult {
            name: "web.default.svc.cluster.local".into(),
            answers: vec![
                pb::DnsAnswer {
                    server: "198.18.200.10:53".into(),
                    source: "resolv.conf".into(),
                    rcode: "TIMEOUT".into(),
                    latency_ns: 2_000_000_000,
                    detail: "asked web.default.svc.cluster.local.; no answer within 2s".into(),
                    ..Default::default()
                },
                pb::DnsAnswer {
                    server: "198.18.0.1:53".into(),
                    source: "explicit".into(),
                    rcode: "NOERROR".into(),
                    answers: vec!["web.default.svc.cluster.local. 0 IN A 198.18.200.80".into()],
                    latency_ns: 1_200_000,
                    detail: String::new(),
                },
            ],
            resolv_conf_servers: vec!["198.18.200.10".into()],
            search: vec!["default.svc.cluster.local".into()],
            conclusion: "cluster DNS 198.18.200.10 timed out while 198.18.0.1 answered: the pod cannot reach cluster DNS".into(),
        };
        let report = DigReport::new(&dig_args(), Finished::with_outcome(Outcome::Dns(result)));
        let text = report.lines().join("\n");
        assert!(
            text.contains(
                ";; SERVER: 198.18.200.10#53 (resolv.conf)  status: TIMEOUT  Query time: 2000 msec"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                ";; ANSWER SECTION:\nweb.default.svc.cluster.local.\t0\tIN\tA\t198.18.200.80"
            ),
            "{text}"
        );
        assert!(
            text.contains(";; CONCLUSION: cluster DNS 198.18.200.10 timed out"),
            "{text}"
        );
        assert_eq!(report.exit_code(), exit::FAULT);
        assert_eq!(report.record_type, "A");
    }

    #[test]
    fn dig_errors_map_to_exit_codes() {
        let error = Outcome::Error(pb::TaskError {
            kind: pb::task_error::Kind::InvalidInput.into(),
            message: "dns.name: bad".into(),
        });
        let report = DigReport::new(&dig_args(), Finished::with_outcome(error));
        assert_eq!(report.exit_code(), exit::USAGE);
        assert_eq!(dig_server("[::1]:53"), "::1#53");
    }
}
