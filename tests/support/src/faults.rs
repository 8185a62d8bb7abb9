//! A fault-injecting HTTP/1.1 proxy for tests of clients of the real S3
//! server: it sits between the client and moto and, per a seeded policy,
//! answers some requests with 500/503 (before or after forwarding them),
//! drops connections without answering, delays answers and cuts response
//! bodies short.
//!
//! It speaks just enough HTTP for S3 clients: each client connection
//! carries one request (answers say `Connection: close`, so the client
//! opens a new connection for the next), request bodies are framed by
//! `Content-Length` or chunked encoding, and the upstream answer is read to
//! the end of its connection. Every buffer is bounded by `MAX_MESSAGE`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest request or response the proxy holds in memory.
const MAX_MESSAGE: usize = 256 << 20;

/// What fraction of requests get each fault; the rest are forwarded
/// untouched. Fractions are checked in field order and should sum to at
/// most 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPolicy {
    /// Seeds the choice of faults: request `n` of a proxy with seed `s`
    /// always gets the same fault.
    pub seed: u64,
    /// Answered `503 SlowDown` without being forwarded.
    pub unavailable: f64,
    /// Forwarded (so the server acts on it), then answered
    /// `500 InternalError`: the client cannot know the request took effect.
    pub error_after_forwarding: f64,
    /// Read, then the connection is closed without an answer.
    pub reset: f64,
    /// Forwarded, and the answer's body cut to half (the headers still
    /// promise all of it) before the connection is closed.
    pub truncate: f64,
    /// Forwarded, and the answer held back for `delay`.
    pub slow: f64,
    pub delay: Duration,
}

impl FaultPolicy {
    /// Forwards everything.
    pub const NONE: FaultPolicy = FaultPolicy {
        seed: 0,
        unavailable: 0.0,
        error_after_forwarding: 0.0,
        reset: 0.0,
        truncate: 0.0,
        slow: 0.0,
        delay: Duration::ZERO,
    };

    /// `fraction` of requests faulted, split evenly over the five kinds.
    pub fn mixed(seed: u64, fraction: f64, delay: Duration) -> Self {
        let each = fraction / 5.0;
        FaultPolicy { seed, unavailable: each, error_after_forwarding: each, reset: each, truncate: each, slow: each, delay }
    }

    fn choose(&self, n: u64) -> Fault {
        let x = (splitmix(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 11) as f64 / (1u64 << 53) as f64;
        let mut edge = 0.0;
        for (p, f) in [
            (self.unavailable, Fault::Unavailable),
            (self.error_after_forwarding, Fault::ErrorAfterForwarding),
            (self.reset, Fault::Reset),
            (self.truncate, Fault::Truncate),
            (self.slow, Fault::Slow),
        ] {
            edge += p;
            if x < edge {
                return f;
            }
        }
        Fault::None
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Unavailable,
    ErrorAfterForwarding,
    Reset,
    Truncate,
    Slow,
}

/// How many requests the proxy saw and how many of each fault it injected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultCounts {
    pub requests: u64,
    pub unavailable: u64,
    pub error_after_forwarding: u64,
    pub reset: u64,
    pub truncate: u64,
    pub slow: u64,
}

impl FaultCounts {
    pub fn faults(&self) -> u64 {
        self.unavailable + self.error_after_forwarding + self.reset + self.truncate + self.slow
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    by_kind: [AtomicU64; 6],
}

struct Shared {
    upstream: SocketAddr,
    policy: Mutex<FaultPolicy>,
    counters: Counters,
    stopping: AtomicBool,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `upstream`
    /// (`http://host:port` or `host:port`).
    pub fn start(upstream: &str, policy: FaultPolicy) -> FaultProxy {
        let rest = upstream.split_once("://").map_or(upstream, |(_, r)| r);
        let host_port = rest.split('/').next().unwrap_or(rest);
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .unwrap_or_else(|e| panic!("fault proxy upstream {upstream:?} is not an address: {e}"))
            .next()
            .unwrap_or_else(|| panic!("fault proxy upstream {upstream:?} resolves to nothing"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let shared = Arc::new(Shared { upstream, policy: Mutex::new(policy), counters: Counters::default(), stopping: AtomicBool::new(false) });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if accept.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || {
                    let _ = serve(&shared, conn);
                });
            }
        });
        FaultProxy { addr, shared }
    }

    /// `http://127.0.0.1:PORT`, to give the client as its endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the policy for requests from now on.
    pub fn set_policy(&self, policy: FaultPolicy) {
        *self.shared.policy.lock().unwrap() = policy;
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.shared.counters;
        let k = |i: usize| c.by_kind[i].load(Ordering::SeqCst);
        FaultCounts {
            requests: c.requests.load(Ordering::SeqCst),
            unavailable: k(1),
            error_after_forwarding: k(2),
            reset: k(3),
            truncate: k(4),
            slow: k(5),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn too_big() -> std::io::Error {
    std::io::Error::other("message larger than the fault proxy holds")
}

/// Reads a message head (through the blank line).
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        head.extend_from_slice(&line);
        if head.len() > 64 << 10 {
            return Err(too_big());
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads a request body as it was framed, raw (chunk framing included).
fn read_body(r: &mut impl BufRead, head: &str) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            body.extend_from_slice(&line);
            let size_text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if body.len() + size > MAX_MESSAGE {
                return Err(too_big());
            }
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    body.extend_from_slice(&t);
                    if t == b"\r\n" || t.is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])?;
        }
    }
    let len: usize = header(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if len > MAX_MESSAGE {
        return Err(too_big());
    }
    body.resize(len, 0);
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Rewrites a head's `Connection` header to `close`.
fn with_connection_close(head: &str) -> String {
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.split_once(':').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection")) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// Sends the request upstream and returns its whole answer.
fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    up.write_all(with_connection_close(head).as_bytes())?;
    up.write_all(body)?;
    let mut answer = Vec::new();
    up.take(MAX_MESSAGE as u64 + 1).read_to_end(&mut answer)?;
    if answer.len() > MAX_MESSAGE {
        return Err(too_big());
    }
    Ok(answer)
}

fn s3_error(status: &str, code: &str) -> Vec<u8> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>");
    format!("HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn serve(shared: &Shared, client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(head) = read_head(&mut reader)? else { return Ok(()) };
    let head = String::from_utf8_lossy(&head).into_owned();
    let body = read_body(&mut reader, &head)?;
    let n = shared.counters.requests.fetch_add(1, Ordering::SeqCst);
    let policy = *shared.policy.lock().unwrap();
    let fault = policy.choose(n);
    if fault != Fault::None {
        shared.counters.by_kind[fault as usize].fetch_add(1, Ordering::SeqCst);
    }
    let mut client = client;
    match fault {
        Fault::Unavailable => client.write_all(&s3_error("503 Slow Down", "SlowDown"))?,
        Fault::Reset => {}
        Fault::ErrorAfterForwarding => {
            forward(shared.upstream, &head, &body)?;
            client.write_all(&s3_error("500 Internal Server Error", "InternalError"))?;
        }
        Fault::None | Fault::Slow | Fault::Truncate => {
            let answer = forward(shared.upstream, &head, &body)?;
            if fault == Fault::Slow {
                std::thread::sleep(policy.delay);
            }
            let split = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |p| p + 4);
            let (resp_head, resp_body) = answer.split_at(split);
            client.write_all(with_connection_close(&String::from_utf8_lossy(resp_head)).as_bytes())?;
            if fault == Fault::Truncate {
                client.write_all(&resp_body[..resp_body.len() / 2])?;
            } else {
                client.write_all(resp_body)?;
            }
        }
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_chooses_the_same_faults() {
        let p = FaultPolicy::mixed(7, 0.5, Duration::from_millis(1));
        let a: Vec<Fault> = (0..200).map(|n| p.choose(n)).collect();
        let b: Vec<Fault> = (0..200).map(|n| p.choose(n)).collect();
        assert_eq!(a, b);
        let faulted = a.iter().filter(|f| **f != Fault::None).count();
        assert!((50..150).contains(&faulted), "{faulted} of 200 faulted at 50%");
        for kind in [Fault::Unavailable, Fault::ErrorAfterForwarding, Fault::Reset, Fault::Truncate, Fault::Slow] {
            assert!(a.contains(&kind), "{kind:?} never chosen");
        }
    }

    #[test]
    fn no_policy_never_faults() {
        assert!((0..1000).all(|n| FaultPolicy::NONE.choose(n) == Fault::None));
    }

    #[test]
    fn a_truncated_answer_keeps_its_promised_length_and_is_cut_short() {
        // A tiny upstream that answers every request with 10 bytes.
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = up.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in up.incoming() {
                let mut c = c.unwrap();
                let _ = read_head(&mut BufReader::new(c.try_clone().unwrap()));
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").unwrap();
            }
        });
        let proxy = FaultProxy::start(&up_addr.to_string(), FaultPolicy { truncate: 1.0, ..FaultPolicy::NONE });
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("Content-Length: 10") && answer.ends_with("\r\n\r\n01234"), "{answer:?}");
        assert_eq!(proxy.counts(), FaultCounts { requests: 1, truncate: 1, ..FaultCounts::default() });
    }
}
