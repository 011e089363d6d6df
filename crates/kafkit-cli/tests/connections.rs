//! `kafkit serve`'s listener against clients that hold connections without using them: every
//! connection state has a deadline (before the first byte, reading headers, idle HTTP/1 and
//! HTTP/2, the TLS handshake), one HTTP/2 connection carries few requests at once, and SIGTERM
//! closes connections that have not delivered a whole request at once.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafkit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `kafkit serve` on the test broker; killed on drop.
struct Gateway {
    child: Child,
    address: String,
}

impl Gateway {
    /// Starts `kafkit serve` on a free loopback port with `args`, once its readiness line is
    /// logged.
    fn start(args: &[&str]) -> Gateway {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let address = format!("127.0.0.1:{port}");
        let mut child = kafkit()
            .env("KAFKA_BROKERS", testkit::brokers())
            .args(["serve", "--listen", &address])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("gateway exited before it was ready")
                .unwrap();
            if line.contains("kafkit gateway ready") {
                break;
            }
        }
        // Keep draining the log so the gateway never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Gateway { child, address }
    }

    /// Sends SIGTERM.
    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// One whole request on a fresh connection: the status line of the answer, or why none came.
async fn request(address: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(LIVE).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    match answer.lines().next() {
        Some(status) if !status.is_empty() => Ok(status.to_owned()),
        _ => Err("closed without an answer".to_owned()),
    }
}

/// Whether the server closes `stream` within `within` (reading and dropping what it sends).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_the_gateway_out() {
    let gateway = Gateway::start(&["--max-connections", "4", "--header-timeout-ms", "2000"]);
    // Four connections that never send a byte take every connection place.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(&gateway.address).await.unwrap());
    }
    let opened = Instant::now();
    // A real client, retrying while it is refused, is answered within a few seconds: the
    // silent connections are closed once the header timeout passes.
    let answered = loop {
        match request(&gateway.address).await {
            Ok(status) => break status,
            Err(why) if opened.elapsed() < Duration::from_secs(6) => {
                let _ = why;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(why) => panic!(
                "not answered {:?} after the silent connections: {why}",
                opened.elapsed()
            ),
        }
    };
    assert_eq!(answered, "HTTP/1.1 200 OK");
    // And the silent connections were closed by the server.
    for stream in &mut silent {
        assert!(closed_within(stream, Duration::from_secs(1)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_and_carries_few_streams() {
    let gateway = Gateway::start(&["--header-timeout-ms", "1500"]);
    // An HTTP/2 client sends the preface and an empty SETTINGS frame, then nothing.
    let mut h2 = TcpStream::connect(&gateway.address).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let opened = Instant::now();
    // The server's first frame is its SETTINGS: at most 16 concurrent streams.
    let mut head = [0u8; 9];
    h2.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 4, "first frame is SETTINGS");
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut settings = vec![0u8; length];
    h2.read_exact(&mut settings).await.unwrap();
    let max_streams = settings
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == 3)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert!(
        max_streams.is_some_and(|n| n <= 16),
        "MAX_CONCURRENT_STREAMS {max_streams:?}"
    );
    // The connection, idle, is closed after the timeout (not before, not never).
    assert!(
        closed_within(&mut h2, Duration::from_secs(5)).await,
        "idle HTTP/2 stayed open"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        opened.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_is_bounded_before_and_after_its_handshake() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(testkit::unique("kafkit-tls-limits"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let gateway = Gateway::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--header-timeout-ms",
        "1500",
    ]);
    // A connection that never starts its handshake is closed.
    let mut silent = TcpStream::connect(&gateway.address).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a connection without a handshake stayed open"
    );
    // One that completes the handshake and then sends nothing is closed too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(&gateway.address).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "an idle TLS connection stayed open");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_a_connection_that_sent_one_byte_at_once() {
    let mut gateway = Gateway::start(&[]);
    // A client sends one byte of a request and nothing more.
    let mut partial = TcpStream::connect(&gateway.address).await.unwrap();
    partial.write_all(b"G").await.unwrap();
    // And a client between requests on a kept-alive connection.
    let mut kept = TcpStream::connect(&gateway.address).await.unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SIGTERM: no handler runs, so the process exits within about a second.
    gateway.sigterm();
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "still running 1.5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(closed_within(&mut partial, Duration::from_millis(100)).await);
}
