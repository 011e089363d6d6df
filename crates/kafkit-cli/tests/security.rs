//! TLS and SCRAM end to end: a nisshi broker that serves only TLS and requires SCRAM logins,
//! configured through the same `KAFKA_*` variables users set.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json_lines, kafkit, run};
use kafkit::{Admin, KafkaConfig, Producer, Record, TopicSpec};

/// A broker process, killed on drop.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(port: u16, storage: &Path, tls: Option<(&Path, &Path)>) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(testkit::nisshi_bin());
    command
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        // nisshi reads `sqlite://` paths relative to its working directory.
        .current_dir(storage.parent().unwrap())
        .arg("--storage-engine")
        .arg(format!(
            "sqlite://{}",
            storage.file_name().unwrap().to_str().unwrap()
        ))
        .args(["--group-initial-rebalance-delay", "0s"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(storage.with_extension("log")).unwrap());
    if let Some((cert, key)) = tls {
        command
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--authentication");
    }
    let broker = Broker(command.spawn().expect("start nisshi"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nisshi did not listen on {port}: {}",
            std::fs::read_to_string(storage.with_extension("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn secure_config(port: u16, ca: &Path, mechanism: &str, user: &str, password: &str) -> KafkaConfig {
    let address = format!("127.0.0.1:{port}");
    KafkaConfig::from_vars([
        ("KAFKA_BROKERS", address.as_str()),
        ("KAFKA_SSL_ENABLED", "true"),
        ("KAFKA_SSL_CA_LOCATION", ca.to_str().unwrap()),
        ("KAFKA_SASL_MECHANISM", mechanism),
        ("KAFKA_SASL_USERNAME", user),
        ("KAFKA_SASL_PASSWORD", password),
        ("KAFKA_DELIVERY_TIMEOUT", "5000"),
        ("KAFKA_REQUEST_TIMEOUT", "5000"),
    ])
    .unwrap()
}

/// A directory with a self-signed certificate for 127.0.0.1 and an empty SCRAM user store.
fn prepare() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(testkit::unique("kafkit-secure"));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let storage = dir.join("broker.db");
    (dir, cert, key, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_scram_sha_512_and_256_produces_and_consumes() {
    // Given users created on a plain broker, then the same storage served with TLS and
    // mandatory SCRAM authentication.
    let (_dir, cert, key, storage) = prepare();
    let port = testkit::free_port();
    {
        let _plain = start_broker(port, &storage, None);
        for (user, password, mechanism) in [
            ("alice", "s3cret-512", "scram512"),
            ("bob", "s3cret-256", "scram256"),
        ] {
            let status = Command::new(testkit::nisshi_bin())
                .args([
                    "user",
                    "create",
                    "--broker",
                    &format!("tcp://127.0.0.1:{port}"),
                ])
                .args([user, password, "--mechanism", mechanism])
                .status()
                .unwrap();
            assert!(status.success(), "creating {user}");
        }
    }
    let _secure = start_broker(port, &storage, Some((&cert, &key)));

    // When alice (SCRAM-SHA-512 over TLS) creates a topic and produces to it.
    let alice = secure_config(port, &cert, "scram-sha-512", "alice", "s3cret-512");
    assert_eq!(alice.security.protocol(), "sasl_ssl");
    Admin::new(&alice)
        .unwrap()
        .ensure_topics(&[TopicSpec::new("secure-orders", 2)])
        .await
        .unwrap();
    let producer = Producer::new(&alice).unwrap();
    let results = producer
        .send_batch((0..50).map(|i| {
            Record::to("secure-orders")
                .key(format!("k{i}"))
                .text(format!("v{i}"))
        }))
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    producer.shutdown().await.unwrap();

    // Then bob (SCRAM-SHA-256) reads all of it back through the CLI, configured by the
    // environment alone.
    let output = run(
        kafkit()
            .args([
                "consume",
                "--topic",
                "secure-orders",
                "--from-beginning",
                "--count",
                "50",
            ])
            .args(["--idle-timeout-ms", "20000"])
            .env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))
            .env("KAFKA_SSL_ENABLED", "true")
            .env("KAFKA_SSL_CA_LOCATION", &cert)
            .env("KAFKA_SASL_MECHANISM", "scram-sha-256")
            .env("KAFKA_SASL_USERNAME", "bob")
            .env("KAFKA_SASL_PASSWORD", "s3cret-256"),
        "",
    );
    assert_eq!(json_lines(&output).len(), 50);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("s3cret"),
        "password in the log"
    );

    // And a wrong password is refused: nothing is delivered.
    let mallory = secure_config(port, &cert, "scram-sha-512", "alice", "wrong");
    let producer = Producer::new(&mallory).unwrap();
    let refused = producer
        .send(Record::to("secure-orders").text("intruder"))
        .await;
    assert!(refused.is_err(), "a wrong password was accepted");
    let after = Admin::new(&alice)
        .unwrap()
        .describe_topic("secure-orders")
        .await
        .unwrap();
    assert_eq!(after.record_count(), 50);
}
