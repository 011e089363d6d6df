//! The push benchmark's endpoint process (`kafkit-bench endpoint`), over real loopback HTTP: it
//! answers 200, counts each delivery id once (a re-delivery is a request, not a record), refuses
//! a request without one, and prints its completion line once every expected record was
//! answered. No timing is asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// One `POST /push` on a connection of its own; answers the status code.
fn post(port: u16, delivery_id: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("endpoint listening");
    let header = delivery_id
        .map(|id| format!("kafkit-delivery-id: {id}\r\n"))
        .unwrap_or_default();
    let body = r#"{"id":1}"#;
    write!(
        stream,
        "POST /push HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{header}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request written");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[test]
fn counts_each_delivery_once_and_reports_completion() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafkit-bench"))
        .args(["endpoint", "--delay-ms", "1", "--expect", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("endpoint started");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a first line").expect("utf-8")).expect("json");
    let port = first["listening"].as_u64().expect("a port") as u16;

    assert_eq!(post(port, Some("t/0/0")), 200);
    assert_eq!(post(port, Some("t/0/1")), 200);
    assert_eq!(
        post(port, Some("t/0/0")),
        200,
        "a re-delivery is answered too"
    );
    assert_eq!(post(port, None), 400, "no delivery id");
    assert_eq!(post(port, Some("t/1/0")), 200);

    let line: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a completion line").expect("utf-8"))
            .expect("json");
    child.kill().ok();
    child.wait().ok();
    assert_eq!(line["complete"], true, "{line}");
    assert_eq!(
        line["requests"], 5,
        "complete after the third distinct id, five requests in: {line}"
    );
    let (first_ms, done_ms) = (line["first_ms"].as_f64(), line["done_ms"].as_f64());
    assert!(first_ms.is_some() && done_ms.is_some(), "{line}");
    assert!(first_ms <= done_ms, "{line}");
}
