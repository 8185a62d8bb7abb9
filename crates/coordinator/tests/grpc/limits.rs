//! The gRPC server's connection limits (`[server]`, issue #15 item 7).

use std::time::Duration;

use rbk_coordinator::server_limits::ServerLimits;
use tokio::io::AsyncReadExt;

use crate::harness::*;

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let farm = farm_with_limits(ServerLimits { handshake_timeout_ms: 200, ..Default::default() }).await;
    let mut silent = tokio::net::TcpStream::connect(farm.url.trim_start_matches("http://")).await.unwrap();
    // Whatever the server sends (an HTTP/2 server may send its SETTINGS
    // first), it must then close the connection.
    let until_closed = async {
        let mut buf = [0u8; 64];
        while let Ok(n) = silent.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(30), until_closed).await;
    assert!(closed.is_ok(), "a connection that sent nothing was still open after 30 s");
    // The server still serves connections that do speak.
    farm.client(TENANT_A).await.list_caches().await.unwrap();
}

#[tokio::test]
async fn the_server_advertises_its_max_concurrent_streams() {
    let farm = farm_with_limits(ServerLimits { max_concurrent_streams: 7, ..Default::default() }).await;
    let tcp = tokio::net::TcpStream::connect(farm.url.trim_start_matches("http://")).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    // Any request: its answer comes after the server's SETTINGS.
    let request = http::Request::post(format!("{}/rbk.build.v1.Build/List", farm.url)).header("content-type", "application/grpc").body(()).unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    response.await.unwrap();
    assert_eq!(send.current_max_send_streams(), 7);
}
