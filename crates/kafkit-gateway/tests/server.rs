//! The gateway's own listener on a real socket: a half-sent request is cut off after the
//! header timeout, shutdown is bounded even while a client holds a request open, and
//! connections over the limit are closed at accept.

use std::time::{Duration, Instant};

use kafkit::{Kafka, KafkaConfig};
use kafkit_gateway::{AppState, ServerLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A running gateway with `limits`: its address, the trigger of its shutdown and its task.
async fn start(
    limits: ServerLimits,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let kafka = Kafka::connect(&KafkaConfig::new([testkit::brokers()])).unwrap();
    let state = AppState::new(&kafka).unwrap().with_server_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (address, stop, server)
}

/// Reads until the server closes the connection or `within` passes; what was read, and
/// whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

const HALF_SENT: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n";
const WHOLE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_cut_off_after_the_header_timeout() {
    let (address, stop, server) = start(ServerLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    })
    .await;
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(HALF_SENT).await.unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(closed, "the connection stayed open with half a request");

    // A whole request is still answered.
    let mut client = TcpStream::connect(&address).await.unwrap();
    client.write_all(WHOLE).await.unwrap();
    let (answer, _) = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_a_client_holds_a_request_open() {
    let (address, stop, server) = start(ServerLimits {
        header_read_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    })
    .await;
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(HALF_SENT).await.unwrap();
    // Let the server take the connection before shutting down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("shutdown finished while a request was half-sent")
        .unwrap()
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(20));
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        closed,
        "the held connection was closed at the end of the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_accept() {
    let (address, stop, server) = start(ServerLimits {
        max_connections: 2,
        ..ServerLimits::default()
    })
    .await;
    // Two idle connections hold both places.
    let first = TcpStream::connect(&address).await.unwrap();
    let _second = TcpStream::connect(&address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A third is closed without an answer.
    let mut third = TcpStream::connect(&address).await.unwrap();
    let _ = third.write_all(WHOLE).await;
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(
        closed && answer.is_empty(),
        "over the limit yet answered: {answer}"
    );

    // Once a place is free, a new connection is served.
    drop(first);
    let mut answered = false;
    for _ in 0..50 {
        let mut next = TcpStream::connect(&address).await.unwrap();
        let _ = next.write_all(WHOLE).await;
        let (answer, _) = read_until_closed(&mut next, Duration::from_secs(5)).await;
        if answer.starts_with("HTTP/1.1 200") {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered,
        "a freed place was never given to a new connection"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
