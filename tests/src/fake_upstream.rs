//! A scripted HTTP/1.1 server standing in for "whatever is behind the agent": it records each
//! request exactly as it arrived (head and de-chunked body) and answers with hand-made bytes, so
//! the agent role can be checked against responses a real server side would rarely produce
//! (1-byte chunks, HTTP errors with HTML, trailers-only, truncation).
//!
//! The scenario is picked by the request header `x-fake-scenario` (a tonic client sets it as
//! metadata; the agent passes it through).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::grpcweb::frame;

/// One request as the fake upstream received it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub version: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Raw response bytes for a scenario name, or `None` for the built-in scenarios.
pub type Custom = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Start on 127.0.0.1:0 on the current Tokio runtime.
    pub async fn start() -> FakeUpstream {
        Self::start_with(Arc::new(|_: &str| None)).await
    }

    /// Like [`FakeUpstream::start`], but a scenario for which `custom` returns bytes is answered
    /// with exactly those bytes (a complete HTTP/1.1 response; the connection stays open).
    pub async fn start_with(custom: Custom) -> FakeUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let reqs = reqs.clone();
                let custom = custom.clone();
                tokio::spawn(async move {
                    let _ = serve(s, reqs, custom).await;
                });
            }
        });
        FakeUpstream {
            addr,
            requests,
            task,
        }
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests.lock().unwrap().last().cloned()
    }
}

async fn serve(
    s: TcpStream,
    reqs: Arc<Mutex<Vec<Recorded>>>,
    custom: Custom,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let mut rec = Recorded {
            method: parts.next().unwrap_or("").into(),
            path: parts.next().unwrap_or("").into(),
            version: parts.next().unwrap_or("").into(),
            ..Default::default()
        };
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                rec.headers
                    .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        rec.chunked = rec
            .header("transfer-encoding")
            .map(|v| v.contains("chunked"))
            .unwrap_or(false);
        if rec.chunked {
            loop {
                let mut sz = String::new();
                r.read_line(&mut sz).await?;
                let n = usize::from_str_radix(sz.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if n == 0 {
                    // trailers (none expected) up to the empty line
                    loop {
                        let mut t = String::new();
                        r.read_line(&mut t).await?;
                        if t.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut buf = vec![0; n];
                r.read_exact(&mut buf).await?;
                rec.body.extend(buf);
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf).await?;
            }
        } else if let Some(n) = rec
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            let mut buf = vec![0; n];
            r.read_exact(&mut buf).await?;
            rec.body = buf;
        }
        let scenario = rec.header("x-fake-scenario").unwrap_or("ok").to_string();
        reqs.lock().unwrap().push(rec);
        if let Some(raw) = custom(&scenario) {
            // Kept open (keep-alive): closing right after a complete response races with the
            // client reusing the connection.
            r.get_mut().write_all(&raw).await?;
            r.get_mut().flush().await?;
            continue;
        }
        let keep = respond(r.get_mut(), &scenario).await?;
        if !keep {
            return Ok(());
        }
    }
}

/// The binary trailer value used by the scenarios (base64 of it goes on the wire).
pub const FAKE_BIN: &[u8] = &[0x00, 0xff, b'\r', b'\n', b':'];

fn ok_body(trailer_block: &str) -> Vec<u8> {
    // UnaryResponse { payload: "fake" } = field 1, length 4.
    let mut b = frame(0, &[0x0a, 4, b'f', b'a', b'k', b'e']);
    b.extend(frame(0x80, trailer_block.as_bytes()));
    b
}

async fn write_chunked(
    s: &mut TcpStream,
    head: &str,
    body: &[u8],
    chunk: usize,
    pause: Duration,
) -> std::io::Result<()> {
    s.write_all(head.as_bytes()).await?;
    for c in body.chunks(chunk.max(1)) {
        s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
        s.write_all(c).await?;
        s.write_all(b"\r\n").await?;
        s.flush().await?;
        if !pause.is_zero() {
            // Simulates a slow upstream: each chunk leaves in its own write (nothing waits on it).
            tokio::time::sleep(pause).await;
        }
    }
    s.write_all(b"0\r\n\r\n").await
}

/// Write the scripted response; returns whether the connection stays open.
async fn respond(s: &mut TcpStream, scenario: &str) -> std::io::Result<bool> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(FAKE_BIN);
    let grpc_head = "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ntransfer-encoding: chunked\r\n\r\n";
    let std_trailers =
        format!("grpc-status:0\r\nx-fake-trl:trailer value\r\nx-fake-trl-bin:{b64}\r\n");
    match scenario {
        "ok" => {
            write_chunked(
                s,
                grpc_head,
                &ok_body(&std_trailers),
                1 << 20,
                Duration::ZERO,
            )
            .await?;
        }
        "ok_1byte_chunks" => {
            // Every byte in its own chunk, flushed separately.
            write_chunked(
                s,
                grpc_head,
                &ok_body(&std_trailers),
                1,
                Duration::from_micros(200),
            )
            .await?;
        }
        "ok_content_length" => {
            let body = ok_body(&std_trailers);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await?;
            s.write_all(&body).await?;
        }
        "ok_mixed_case_trailers" => {
            let t =
                format!("Grpc-Status: 0\r\nX-Fake-Trl: trailer value\r\nx-fake-trl-bin: {b64}\r\n");
            write_chunked(s, grpc_head, &ok_body(&t), 1 << 20, Duration::ZERO).await?;
        }
        "error_in_trailer_frame" => {
            let t = "grpc-status:9\r\ngrpc-message:failed%20%C3%BCber%2525\r\n";
            let body = frame(0x80, t.as_bytes());
            write_chunked(s, grpc_head, &body, 1 << 20, Duration::ZERO).await?;
        }
        "trailers_only" => {
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ngrpc-status: 7\r\ngrpc-message: denied%20here\r\ncontent-length: 0\r\n\r\n",
            )
            .await?;
        }
        "truncated" => {
            // A message frame, then the connection closes: no trailer frame, no chunk terminator.
            s.write_all(grpc_head.as_bytes()).await?;
            let f = frame(0, &[0x0a, 4, b'f', b'a', b'k', b'e']);
            s.write_all(format!("{:x}\r\n", f.len()).as_bytes()).await?;
            s.write_all(&f).await?;
            s.write_all(b"\r\n").await?;
            s.flush().await?;
            // Simulates an upstream that stalls, then dies: not synchronisation (the case
            // accepts any non-OK status, whether the frame and the close arrive apart or not).
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(false);
        }
        http if http.starts_with("http_") => {
            let code: u16 = http[5..].parse().unwrap_or(500);
            let body = format!("<html><body><h1>{code} from the fake proxy</h1></body></html>");
            let head = format!(
                "HTTP/1.1 {code} Whatever\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            s.write_all(body.as_bytes()).await?;
        }
        _ => {
            s.write_all(b"HTTP/1.1 500 Unknown scenario\r\ncontent-length: 0\r\n\r\n")
                .await?;
        }
    }
    s.flush().await?;
    Ok(true)
}
