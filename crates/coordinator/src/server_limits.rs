//! Connection limits of the gRPC server (issue #15, item 7): without them
//! one tenant could hold thousands of idle or half-open connections, or
//! open any number of streams on one, and the coordinator would keep them
//! all.
//!
//! ```toml
//! [server]                        # optional; defaults shown
//! max_concurrent_streams = 256    # per HTTP/2 connection (more queue in the client)
//! handshake_timeout_ms = 10000    # a connection that sends nothing this long is closed
//! keepalive_interval_ms = 30000   # HTTP/2 PING an idle connection this often...
//! keepalive_timeout_ms = 20000    # ...and close it when the PING is not answered
//! tcp_keepalive_ms = 60000        # TCP keepalive (a vanished peer's half-open socket)
//! ```
//!
//! A connection whose peer went away is closed by the keepalives; one that
//! never starts (a TCP connect and silence) by the handshake timeout, which
//! is enforced here before tonic sees the socket: hyper has no such timeout
//! for HTTP/2. Pending handshakes are bounded ([`MAX_PENDING_HANDSHAKES`]);
//! beyond that, new connections are closed at once.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

/// Connections accepted whose first bytes have not arrived yet.
pub const MAX_PENDING_HANDSHAKES: usize = 4096;

/// `[server]`: see the module docs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    pub max_concurrent_streams: u32,
    pub handshake_timeout_ms: u64,
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub tcp_keepalive_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            handshake_timeout_ms: 10_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 20_000,
            tcp_keepalive_ms: 60_000,
        }
    }
}

impl ServerLimits {
    /// Checks the values (all must be > 0), naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("max_concurrent_streams", self.max_concurrent_streams as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("tcp_keepalive_ms", self.tcp_keepalive_ms),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        match zero {
            Some((key, _)) => Err(format!("server.{key} must be > 0")),
            None => Ok(()),
        }
    }

    /// The tonic server builder with these limits.
    pub fn apply(&self, server: tonic::transport::Server) -> tonic::transport::Server {
        server
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_millis(self.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(self.keepalive_timeout_ms)))
            .tcp_keepalive(Some(Duration::from_millis(self.tcp_keepalive_ms)))
    }

    /// The connections of `listener` that send their first bytes within
    /// the handshake timeout; the others are closed.
    pub fn incoming(&self, listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
        let timeout = Duration::from_millis(self.handshake_timeout_ms);
        let (tx, rx) = mpsc::channel::<std::io::Result<TcpStream>>(64);
        let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = tx.closed() => return,
                };
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: say so, go on.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!("{MAX_PENDING_HANDSHAKES} connections are waiting for their first bytes; closing a new one");
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {
                            drop(permit);
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(_) => {}
                        Err(_) => tracing::debug!(peer = ?stream.peer_addr().ok(), "closing a connection that sent nothing within {timeout:?}"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_limit_is_refused_naming_the_key() {
        let limits = ServerLimits { keepalive_timeout_ms: 0, ..Default::default() };
        assert_eq!(limits.validate().unwrap_err(), "server.keepalive_timeout_ms must be > 0");
        assert!(ServerLimits::default().validate().is_ok());
    }
}
