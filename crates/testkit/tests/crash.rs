//! Crash safety and clean shutdown of a real consumer process.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn start(topic: &str, group: &str, out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kafkit-test-consumer"))
        .env("KAFKIT_TEST_BROKERS", testkit::brokers())
        .env("TOPIC", topic)
        .env("GROUP", group)
        .env("OUT", out)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn the test consumer")
}

fn handled(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing() {
    // Given 20,000 records over 4 partitions.
    let topic = testkit::topic("crash", 4).await;
    testkit::populate(&topic, 20_000, 1_000).await;
    let group = testkit::unique("crash");
    let dir = std::env::temp_dir().join(testkit::unique("crash-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("handled.txt");

    // When the consumer is killed with SIGKILL at random points, five times.
    let mut kills = 0;
    let pauses_ms = [700u64, 1_300, 400, 1_900, 1_000];
    for pause in pauses_ms {
        let mut child = start(&topic, &group, &out);
        let before = handled(&out).len();
        // Wait until it is processing (or give up waiting after 20 s: rebalances take time).
        let deadline = Instant::now() + Duration::from_secs(20);
        while handled(&out).len() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
        signal(&child, "-KILL");
        child.wait().unwrap();
        kills += 1;
        if handled(&out).iter().collect::<HashSet<_>>().len() == 20_000 {
            break;
        }
    }
    assert!(
        kills >= 2,
        "the consumer finished before it could be killed twice"
    );

    // And then runs to the end.
    let mut child = start(&topic, &group, &out);
    let deadline = Instant::now() + Duration::from_secs(120);
    while handled(&out).iter().collect::<HashSet<_>>().len() < 20_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    // Then every record was handled at least once: none was skipped.
    let ids = handled(&out);
    let distinct: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct, (0..20_000).collect::<HashSet<u64>>());
    println!(
        "{kills} kills, {} handler runs for 20000 records ({} re-deliveries)",
        ids.len(),
        ids.len() - 20_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_within_the_drain_time_with_everything_committed_handled() {
    // Given 20,000 records and a slow consumer (1 ms per record).
    let topic = testkit::topic("sigterm", 2).await;
    testkit::populate(&topic, 20_000, 1_000).await;
    let group = testkit::unique("sigterm");
    let dir = std::env::temp_dir().join(testkit::unique("sigterm-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("handled.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafkit-test-consumer"))
        .env("KAFKIT_TEST_BROKERS", testkit::brokers())
        .env("TOPIC", &topic)
        .env("GROUP", &group)
        .env("OUT", &out)
        .env("HANDLE_MICROS", "1000")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled(&out).len() < 1_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // When SIGTERM arrives mid-load.
    let sent = Instant::now();
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    let took = sent.elapsed();

    // Then it exits 0 within the drain time (3 s) plus the final commit and group leave.
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let handled: HashSet<u64> = handled(&out).into_iter().collect();
    assert!(handled.len() < 20_000, "the load was over before SIGTERM");

    // And every record below the committed offsets was handled.
    let records = testkit::read(&topic, 20_000, Duration::from_secs(60)).await;
    let id_at: HashMap<(i32, i64), u64> = records
        .iter()
        .map(|m| {
            (
                (m.partition, m.offset),
                m.json::<serde_json::Value>().unwrap()["id"]
                    .as_u64()
                    .unwrap(),
            )
        })
        .collect();
    let mut committed_records = 0;
    for (partition, committed, _) in testkit::committed(&group, &topic).await {
        let committed = committed.expect("a commit on shutdown");
        for offset in 0..committed {
            committed_records += 1;
            let id = id_at[&(partition, offset)];
            assert!(
                handled.contains(&id),
                "offset {partition}/{offset} committed, id {id} never handled"
            );
        }
    }
    assert!(
        committed_records >= 1_000,
        "only {committed_records} committed"
    );
}
