//! The lab's web app (`meshctl lab serve-web`, run in `mesh-pod-web-0`): a
//! tiny HTTP/1.1 responder, so the lab needs no external server.
//!
//! `GET /` answers a line naming the pod; `GET /bytes/N` answers N bytes
//! (at most 16 MiB) for transfer tests; a request body (e.g. a POST upload) is
//! read and discarded before answering. One request per connection.

use std::net::SocketAddr;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Largest `/bytes/N` answer.
const MAX_BYTES: usize = 16 << 20;
/// Largest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// How long `hold` waits for each connection.
const HOLD_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves until the process is stopped.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("serve-web: listening on {listen}");
    loop {
        let (stream, peer) = listener.accept().await.context("accepting")?;
        tokio::spawn(async move {
            if let Err(e) = handle(stream).await {
                eprintln!("serve-web: {peer}: {e:#}");
            }
        });
    }
}

/// Listens on `listen` with an accept queue of `backlog` and never
/// accepts (the `backlog-full` fault: an app stuck outside `accept()`).
/// Serves until the process is stopped.
pub async fn serve_stalled(listen: SocketAddr, backlog: i32) -> anyhow::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&listen.into())
        .with_context(|| format!("binding {listen}"))?;
    socket.listen(backlog)?;
    eprintln!("serve-web: listening on {listen} with backlog {backlog}, never accepting");
    let _listener = socket;
    std::future::pending::<()>().await;
    Ok(())
}

/// Opens up to `count` TCP connections to `to` and holds them open, sending
/// nothing (the `backlog-full` and `ports-exhausted` faults). Each connect
/// waits at most [`HOLD_CONNECT_TIMEOUT`]; the ones that fail are reported
/// and not retried. Holds until the process is stopped.
pub async fn hold(to: SocketAddr, count: u16) -> anyhow::Result<()> {
    let attempts =
        (0..count).map(|_| tokio::time::timeout(HOLD_CONNECT_TIMEOUT, TcpStream::connect(to)));
    let mut held = Vec::new();
    for result in futures::future::join_all(attempts).await {
        match result {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => eprintln!("hold: connecting to {to}: {e}"),
            Err(_) => {
                eprintln!("hold: connecting to {to}: no answer within {HOLD_CONNECT_TIMEOUT:?}")
            }
        }
    }
    eprintln!(
        "hold: holding {} of {count} connections to {to}",
        held.len()
    );
    std::future::pending::<()>().await;
    Ok(())
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    content_length: usize,
}

/// Parses the request line and headers (up to the blank line).
fn parse_head(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    Some(Head {
        method,
        path,
        content_length,
    })
}

/// The status line and body for a request.
fn respond(head: &Head) -> (&'static str, Vec<u8>) {
    if let Some(n) = head.path.strip_prefix("/bytes/") {
        return match n.parse::<usize>() {
            Ok(n) if n <= MAX_BYTES => ("200 OK", vec![b'x'; n]),
            _ => (
                "400 Bad Request",
                b"N must be a number up to 16777216\n".to_vec(),
            ),
        };
    }
    let body = format!(
        "web-0 (default/web): {} {} ok, {} request bytes received\n",
        head.method, head.path, head.content_length
    );
    ("200 OK", body.into_bytes())
}

async fn handle(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            anyhow::bail!("request head larger than {MAX_HEAD} bytes");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = parse_head(&String::from_utf8_lossy(&buf[..end])).context("malformed request")?;
    let mut remaining = head.content_length.saturating_sub(buf.len() - end);
    while remaining > 0 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        remaining = remaining.saturating_sub(n);
    }
    let (status, body) = respond(&head);
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_head("POST /upload HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n")
            .expect("head");
        assert_eq!(
            h,
            Head {
                method: "POST".into(),
                path: "/upload".into(),
                content_length: 12
            }
        );
        assert!(parse_head("").is_none());
        assert_eq!(
            respond(&parse_head("GET /bytes/5 HTTP/1.1\r\n\r\n").expect("head")).1,
            b"xxxxx"
        );
        assert_eq!(
            respond(&parse_head("GET /bytes/x HTTP/1.1\r\n\r\n").expect("head")).0,
            "400 Bad Request"
        );
    }

    #[tokio::test]
    async fn answers_get_and_post_over_tcp() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(handle(s));
            }
        });
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd")
            .await?;
        let mut out = String::new();
        c.read_to_string(&mut out).await?;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.ends_with("POST / ok, 4 request bytes received\n"),
            "{out}"
        );
        Ok(())
    }
}
