//! The TCP transfer test: after the handshake, push N bytes and watch the
//! kernel's `TCP_INFO` until the peer has acknowledged all of them, or the
//! deadline passes. It shows what a connect test cannot: "handshake fine,
//! large segments stall" (an MTU black hole, reference incident 2) looks
//! like a connect that succeeds, then `bytes_acked` stuck below what was
//! sent while retransmissions climb.
//!
//! Against a probe responder (a sink) the bytes are filler. Against any
//! other service they are one harmless HTTP/1.1 request, `GET /` with a
//! padding header making up the size; whatever comes back is read (bounded)
//! and its first line reported.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result};
use super::tcping::{ConnectOutcome, classify_connect_error};
use crate::platform::tcp_info::{TcpInfo, tcp_info};

/// How often `TCP_INFO` is read while the data is in flight.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Most response bytes read from a non-responder peer.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Longest response line kept for the report, bytes.
const MAX_LINE: usize = 120;

/// Bytes one transfer pushes: 1..=16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferBytes(u32);

impl TransferBytes {
    /// The most bytes one transfer may push (16 MiB).
    pub const MAX: u32 = 16 * 1024 * 1024;
    /// Bytes pushed when the task says 0 (64 KiB).
    pub const DEFAULT: Self = Self(64 * 1024);

    /// A byte count; `None` for 0 or above [`TransferBytes::MAX`].
    pub fn new(bytes: u64) -> Option<Self> {
        u32::try_from(bytes)
            .ok()
            .filter(|&b| b > 0 && b <= Self::MAX)
            .map(Self)
    }

    /// The count in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// A validated TCP transfer task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTransferSpec {
    /// IP address or hostname, as given; resolved on the probe.
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
    /// Bytes to push after the handshake.
    pub bytes: TransferBytes,
    /// Deadline of the whole test, connect included (default 5 s, 1 ms..=60 s).
    pub timeout: Duration,
    /// The peer is a probe responder (a sink); otherwise send an HTTP request.
    pub responder: bool,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Connected; see [`TransferReport::completed`] for whether every byte
    /// was acknowledged.
    Connected,
    /// The connect was refused (RST).
    Refused,
    /// The connect did not complete before the deadline.
    Timeout,
    /// No route to the peer (often an ICMP error).
    Unreachable(String),
    /// The peer reset (or closed) the connection during the transfer.
    Reset(String),
    /// Any other failure, with the OS error.
    Error(String),
}

impl TransferOutcome {
    /// The wire name: connected / refused / timeout / unreachable / reset / error.
    pub fn name(&self) -> &'static str {
        match self {
            TransferOutcome::Connected => "connected",
            TransferOutcome::Refused => "refused",
            TransferOutcome::Timeout => "timeout",
            TransferOutcome::Unreachable(_) => "unreachable",
            TransferOutcome::Reset(_) => "reset",
            TransferOutcome::Error(_) => "error",
        }
    }
}

/// The end result of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// The address connected to.
    pub address: SocketAddr,
    /// How it ended.
    pub outcome: TransferOutcome,
    /// Handshake time, when connected.
    pub handshake: Option<Duration>,
    /// Bytes the test meant to push (the payload's length).
    pub bytes_total: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked` minus its value
    /// right after the handshake).
    pub bytes_acked: u64,
    /// Every byte was acknowledged before the deadline.
    pub completed: bool,
    /// The last `TCP_INFO` read, when connected.
    pub info: Option<TcpInfo>,
    /// From the connect call to the end of the test (tokio clock).
    pub elapsed: Duration,
    /// Bytes the peer sent back (non-responder peers), at most
    /// [`MAX_RESPONSE_BYTES`].
    pub response_bytes: u64,
    /// The first line of the peer's answer, when any came.
    pub response_line: Option<String>,
}

impl TransferReport {
    /// One sentence saying what happened, for the result's `detail`.
    pub fn detail(&self) -> String {
        let mut text = match &self.outcome {
            TransferOutcome::Connected => self.transfer_detail(),
            TransferOutcome::Refused => "connection refused".to_owned(),
            TransferOutcome::Timeout => {
                format!("no TCP handshake within {}", format_duration(self.elapsed))
            }
            TransferOutcome::Unreachable(e) | TransferOutcome::Error(e) => e.clone(),
            TransferOutcome::Reset(e) => format!(
                "{e} after {} of {} bytes were acknowledged",
                self.bytes_acked, self.bytes_total
            ),
        };
        if let Some(line) = &self.response_line {
            text.push_str(&format!("; the peer answered {line:?}"));
        }
        text
    }

    fn transfer_detail(&self) -> String {
        let info = self.info.unwrap_or_default();
        let data_time = self
            .elapsed
            .saturating_sub(self.handshake.unwrap_or_default());
        if self.completed {
            return format!(
                "sent {} bytes, {} acknowledged in {}",
                self.bytes_sent,
                self.bytes_acked,
                format_duration(data_time)
            );
        }
        let why = if info.snd_wnd == Some(0) {
            "the peer stopped reading (its receive window is zero)"
        } else if info.total_retransmits > 0 {
            "large segments are not getting through"
        } else {
            "the peer is not acknowledging (and nothing was retransmitted)"
        };
        format!(
            "sent {} bytes, {} acknowledged after {}: {why} (retransmits {}, mss {}, pmtu {})",
            self.bytes_sent,
            self.bytes_acked,
            format_duration(data_time),
            info.total_retransmits,
            info.snd_mss,
            info.pmtu
        )
    }
}

/// `2.1 ms`, `5 s`, `1.25 s`.
fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        let ms = d.as_secs_f64() * 1000.0;
        let text = format!("{ms:.2}");
        format!("{} ms", trim_zeros(&text))
    } else {
        let text = format!("{:.2}", d.as_secs_f64());
        format!("{} s", trim_zeros(&text))
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// The bytes to push: filler for a responder; otherwise an HTTP/1.1
/// `POST /` whose body makes the request exactly `bytes` long (a request can
/// be no shorter than its head, so tiny sizes send the head with an empty
/// body). A body is what servers read and drain — an oversized header would
/// be refused with 431 and a reset before the bytes were acknowledged.
pub fn payload(bytes: TransferBytes, responder: bool, host: &str, port: u16) -> Vec<u8> {
    let size = usize::try_from(bytes.get()).unwrap_or(usize::MAX);
    if responder {
        return vec![b'p'; size];
    }
    let authority = if port == 80 {
        host.to_owned()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let head = |body: usize| {
        format!(
            "POST / HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: probemesh-transfer\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {body}\r\nConnection: close\r\n\r\n"
        )
    };
    // The head's length depends on the body's digit count: settle it.
    let mut body = size.saturating_sub(head(size).len());
    for _ in 0..3 {
        body = size.saturating_sub(head(body).len());
    }
    let mut request = head(body).into_bytes();
    request.resize(request.len() + body, b'a');
    request
}

/// Runs one transfer to `address`. Returns [`Error::Cancelled`] if `cancel`
/// fires first; every network outcome is a report, not an error. Takes at
/// most `spec.timeout` (plus one poll interval).
pub async fn run(
    spec: &TcpTransferSpec,
    address: SocketAddr,
    cancel: &CancellationToken,
) -> Result<TransferReport> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let data = payload(spec.bytes, spec.responder, &spec.host, spec.port);
    let mut report = TransferReport {
        address,
        outcome: TransferOutcome::Connected,
        handshake: None,
        bytes_total: u64::try_from(data.len()).unwrap_or(u64::MAX),
        bytes_sent: 0,
        bytes_acked: 0,
        completed: false,
        info: None,
        elapsed: Duration::ZERO,
        response_bytes: 0,
        response_line: None,
    };
    let cancelled = || Error::Cancelled { done: 0, total: 1 };
    let connect = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(cancelled()),
        connect = tokio::time::timeout_at(deadline, TcpStream::connect(address)) => connect,
    };
    let stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            report.outcome = match classify_connect_error(&error) {
                ConnectOutcome::Connected => TransferOutcome::Connected,
                ConnectOutcome::Refused => TransferOutcome::Refused,
                ConnectOutcome::Timeout => TransferOutcome::Timeout,
                ConnectOutcome::Unreachable(e) => TransferOutcome::Unreachable(e),
                ConnectOutcome::Error(e) => TransferOutcome::Error(e),
            };
            report.elapsed = start.elapsed();
            return Ok(report);
        }
        Err(_elapsed) => {
            report.outcome = TransferOutcome::Timeout;
            report.elapsed = start.elapsed();
            return Ok(report);
        }
    };
    report.handshake = Some(start.elapsed());
    let baseline = match tcp_info(&stream) {
        Ok(info) => info.bytes_acked,
        Err(e) => {
            report.outcome = TransferOutcome::Error(format!("getsockopt(TCP_INFO): {e}"));
            report.elapsed = start.elapsed();
            return Ok(report);
        }
    };
    push(&stream, &data, baseline, deadline, &mut report, cancel).await?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Writes `data` and polls `TCP_INFO` until all of it is acknowledged, the
/// connection fails, or `deadline`.
async fn push(
    stream: &TcpStream,
    data: &[u8],
    baseline: u64,
    deadline: Instant,
    report: &mut TransferReport,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut sent = 0usize;
    let mut reading = true;
    let mut buf = vec![0u8; 16 * 1024];
    let mut first_bytes: Vec<u8> = Vec::new();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Error::Cancelled { done: 0, total: 1 }),
            () = tokio::time::sleep_until(deadline) => break,
            _ = poll.tick() => {
                match tcp_info(stream) {
                    Ok(info) => {
                        report.info = Some(info);
                        report.bytes_acked = info.bytes_acked.saturating_sub(baseline);
                        if sent == data.len() && report.bytes_acked >= report.bytes_total {
                            report.completed = true;
                            break;
                        }
                    }
                    Err(e) => {
                        report.outcome = TransferOutcome::Error(format!("getsockopt(TCP_INFO): {e}"));
                        break;
                    }
                }
            }
            ready = stream.writable(), if sent < data.len() => {
                let written = ready.and_then(|()| stream.try_write(&data[sent..]));
                match written {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        report.outcome = broken(&e);
                        break;
                    }
                }
                report.bytes_sent = u64::try_from(sent).unwrap_or(u64::MAX);
            }
            ready = stream.readable(), if reading => {
                match ready.and_then(|()| stream.try_read(&mut buf)) {
                    Ok(0) => reading = false,
                    Ok(n) => {
                        report.response_bytes += u64::try_from(n).unwrap_or(u64::MAX);
                        if first_bytes.len() < MAX_LINE {
                            first_bytes.extend_from_slice(&buf[..n.min(MAX_LINE)]);
                        }
                        reading = report.response_bytes < MAX_RESPONSE_BYTES;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        report.outcome = broken(&e);
                        break;
                    }
                }
            }
        }
    }
    if let Ok(info) = tcp_info(stream) {
        report.info = Some(info);
        report.bytes_acked = info.bytes_acked.saturating_sub(baseline);
    }
    // Every byte acknowledged is a completed transfer, even if the peer
    // reset the connection afterwards (the outcome still says so).
    report.completed |= sent == data.len() && report.bytes_acked >= report.bytes_total;
    report.response_line = first_line(&first_bytes);
    Ok(())
}

/// Sorts an error on an established connection.
fn broken(e: &io::Error) -> TransferOutcome {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            TransferOutcome::Reset(format!("connection reset by peer ({e})"))
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            TransferOutcome::Unreachable(e.to_string())
        }
        io::ErrorKind::TimedOut => TransferOutcome::Error(format!("connection timed out ({e})")),
        _ => TransferOutcome::Error(e.to_string()),
    }
}

/// The first line of `bytes` as printable text, when there is one.
fn first_line(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let line: String = String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LINE)
        .collect();
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn bytes(n: u64) -> TransferBytes {
        TransferBytes::new(n).unwrap()
    }

    #[test_case(65536 ; "default size")]
    #[test_case(200 ; "small")]
    #[test_case(16 * 1024 * 1024 ; "max")]
    fn http_requests_are_exactly_the_asked_size(n: u64) {
        let request = payload(bytes(n), false, "198.18.0.12", 30080);
        assert_eq!(request.len() as u64, n);
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST / HTTP/1.1\r\nHost: 198.18.0.12:30080\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(body.bytes().all(|b| b == b'a'));
    }

    #[test]
    fn tiny_http_requests_are_the_fixed_part() {
        let request = String::from_utf8(payload(bytes(1), false, "web", 80)).unwrap();
        assert!(request.starts_with("POST / HTTP/1.1\r\nHost: web\r\n"));
        assert!(request.ends_with("Connection: close\r\n\r\n"));
        assert!(!request.contains("X-Probemesh-Pad"));
        let v6 = String::from_utf8(payload(bytes(1), false, "::1", 8080)).unwrap();
        assert!(v6.contains("Host: [::1]:8080\r\n"));
    }

    #[test]
    fn responder_payload_is_filler() {
        assert_eq!(payload(bytes(3), true, "h", 1), b"ppp");
    }

    #[test]
    fn byte_counts_are_bounded() {
        assert_eq!(TransferBytes::new(0), None);
        assert_eq!(TransferBytes::new(16 * 1024 * 1024 + 1), None);
        assert_eq!(TransferBytes::new(u64::MAX), None);
        assert_eq!(TransferBytes::DEFAULT.get(), 65536);
    }

    fn report(completed: bool, acked: u64, retrans: u32) -> TransferReport {
        TransferReport {
            address: "198.18.0.12:80".parse().unwrap(),
            outcome: TransferOutcome::Connected,
            handshake: Some(Duration::from_micros(310)),
            bytes_total: 65536,
            bytes_sent: 65536,
            bytes_acked: acked,
            completed,
            info: Some(TcpInfo {
                total_retransmits: retrans,
                snd_mss: 1448,
                pmtu: 1500,
                snd_wnd: Some(64_000),
                ..Default::default()
            }),
            elapsed: if completed {
                Duration::from_micros(2410)
            } else {
                Duration::from_micros(5_000_310)
            },
            response_bytes: 0,
            response_line: None,
        }
    }

    #[test]
    fn details_read_like_the_field_says_it() {
        assert_eq!(
            report(true, 65536, 0).detail(),
            "sent 65536 bytes, 65536 acknowledged in 2.1 ms"
        );
        assert_eq!(
            report(false, 2896, 14).detail(),
            "sent 65536 bytes, 2896 acknowledged after 5 s: large segments are not getting through (retransmits 14, mss 1448, pmtu 1500)"
        );
        assert!(
            report(false, 0, 0)
                .detail()
                .contains("not acknowledging (and nothing")
        );
        let mut full = report(false, 0, 3);
        if let Some(info) = full.info.as_mut() {
            info.snd_wnd = Some(0);
        }
        assert!(full.detail().contains("receive window is zero"));
        let mut reset = report(false, 1000, 0);
        reset.outcome = TransferOutcome::Reset("connection reset by peer".into());
        reset.response_line = Some("HTTP/1.1 431 Request Header Fields Too Large".into());
        assert_eq!(
            reset.detail(),
            "connection reset by peer after 1000 of 65536 bytes were acknowledged; the peer answered \"HTTP/1.1 431 Request Header Fields Too Large\""
        );
    }

    #[test]
    fn first_lines_are_printable_and_bounded() {
        assert_eq!(first_line(b""), None);
        assert_eq!(
            first_line(b"HTTP/1.1 200 OK\r\nx: y").as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(
            first_line(&[0xff, 0x1b, b'a']).as_deref(),
            Some("\u{fffd}a")
        );
        assert_eq!(first_line(&[b'x'; 500]).map(|l| l.len()), Some(MAX_LINE));
    }

    #[test]
    fn errors_on_a_live_connection_are_sorted() {
        let e = |errno| io::Error::from_raw_os_error(errno);
        assert_eq!(broken(&e(libc::ECONNRESET)).name(), "reset");
        assert_eq!(broken(&e(libc::EPIPE)).name(), "reset");
        assert_eq!(broken(&e(libc::EHOSTUNREACH)).name(), "unreachable");
        assert_eq!(broken(&e(libc::EACCES)).name(), "error");
    }

    #[tokio::test]
    async fn a_loopback_sink_acknowledges_everything() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sink = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut sink = tokio::io::sink();
            tokio::io::copy(&mut s, &mut sink).await.unwrap()
        });
        let spec = TcpTransferSpec {
            host: "127.0.0.1".into(),
            port: address.port(),
            bytes: bytes(1024 * 1024),
            timeout: Duration::from_secs(5),
            responder: true,
        };
        let report = run(&spec, address, &CancellationToken::new())
            .await
            .unwrap();
        assert!(report.completed, "{report:?}");
        assert_eq!(report.bytes_acked, 1024 * 1024);
        assert_eq!(report.bytes_sent, 1024 * 1024);
        assert_eq!(report.outcome, TransferOutcome::Connected);
        drop(report);
        assert_eq!(sink.await.unwrap(), 1024 * 1024);
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_outcome() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let spec = TcpTransferSpec {
            host: "127.0.0.1".into(),
            port: address.port(),
            bytes: TransferBytes::DEFAULT,
            timeout: Duration::from_secs(2),
            responder: false,
        };
        let report = run(&spec, address, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.outcome, TransferOutcome::Refused);
        assert_eq!(report.detail(), "connection refused");
        assert!(!report.completed);
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_stalls_without_retransmits() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let spec = TcpTransferSpec {
            host: "127.0.0.1".into(),
            port: address.port(),
            bytes: bytes(16 * 1024 * 1024),
            timeout: Duration::from_millis(300),
            responder: true,
        };
        let report = run(&spec, address, &CancellationToken::new())
            .await
            .unwrap();
        assert!(!report.completed);
        assert!(report.bytes_acked < report.bytes_total, "{report:?}");
        assert!(
            report.detail().contains("receive window is zero"),
            "{}",
            report.detail()
        );
        drop(listener);
    }
}
