//! Crash safety and clean shutdown of a real consumer process.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Starts a member process; its handled ids go to `out`.
fn start(topic: &str, group: &str, out: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kafkit-test-consumer"))
        .env("KAFKIT_TEST_BROKERS", testkit::brokers())
        .env("TOPIC", topic)
        .env("GROUP", group)
        .env("OUT", out)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .spawn()
        .expect("spawn the test consumer")
}

fn handled(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|_| panic!("a torn line in {out:?}: {line:?}"))
        })
        .collect()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The id of every record of `topic` by (partition, offset).
async fn ids_by_offset(topic: &str, count: usize) -> HashMap<(i32, i64), u64> {
    testkit::read(topic, count, Duration::from_secs(60))
        .await
        .iter()
        .map(|m| {
            let id = m.json::<serde_json::Value>().unwrap()["id"]
                .as_u64()
                .unwrap();
            ((m.partition, m.offset), id)
        })
        .collect()
}

/// Ids of the records dead-lettered so far (the dead-letter copy keeps the value).
async fn dead_lettered(topic: &str) -> HashSet<u64> {
    dead_letter_copies(topic)
        .await
        .iter()
        .map(|m| {
            m.json::<serde_json::Value>().unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Every dead-letter copy of `topic`'s records so far (read up to the high watermarks).
async fn dead_letter_copies(topic: &str) -> Vec<kafkit::Message> {
    let dlt = format!("{topic}.dlq");
    let admin = testkit::kafka().admin().unwrap();
    let Ok(info) = admin.describe_topic(&dlt).await else {
        return Vec::new();
    };
    let count = info.record_count() as usize;
    let copies = testkit::read(&dlt, count, Duration::from_secs(30)).await;
    assert_eq!(copies.len(), count, "reading {dlt}");
    copies
}

const RECORDS: usize = 30_000;
const POISON_EVERY: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_sigkilled_at_random_lose_nothing_after_any_kill() {
    // Given 30,000 records over 6 partitions, handled by three member processes with 5% of
    // handler calls failing transiently (retried), one poison record in 1,000 (dead-lettered)
    // and commits every 200 ms.
    let topic = testkit::topic("crash", 6).await;
    testkit::populate(&topic, RECORDS, 1_000).await;
    let ids = ids_by_offset(&topic, RECORDS).await;
    assert_eq!(ids.len(), RECORDS);
    let group = testkit::unique("crash");
    let dir = std::env::temp_dir().join(testkit::unique("crash-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("handled.txt");
    let poison = POISON_EVERY.to_string();
    let env = [
        ("HANDLE_MICROS", "3000"),
        ("FAIL_PERCENT", "5"),
        ("POISON_EVERY", poison.as_str()),
        ("COMMIT_MS", "200"),
    ];
    let mut members: Vec<Child> = (0..3).map(|_| start(&topic, &group, &out, &env)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled(&out).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // When a member is SIGKILLed at a random point, then restarted, again and again.
    let mut kills = 0;
    let mut checked_below = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while kills < 12 {
        tokio::time::sleep(Duration::from_millis(300 + next() % 1_200)).await;
        let victim = (next() % members.len() as u64) as usize;
        signal(&members[victim], "-KILL");
        members[victim].wait().unwrap();
        kills += 1;

        // Then, after each kill, every record below the group's committed offsets was handled
        // or dead-lettered: committed offsets first, outcomes second (outcomes only grow).
        let committed = testkit::committed(&group, &topic).await;
        let done: HashSet<u64> = handled(&out).into_iter().collect();
        let dead = dead_lettered(&topic).await;
        checked_below = 0;
        for (partition, committed, _) in committed {
            for offset in 0..committed.unwrap_or(0) {
                let id = ids[&(partition, offset)];
                assert!(
                    done.contains(&id) || dead.contains(&id),
                    "after kill {kills}: {partition}/{offset} (id {id}) committed but neither handled nor dead-lettered"
                );
                checked_below += 1;
            }
        }
        members[victim] = start(&topic, &group, &out, &env);
    }
    assert!(checked_below > 0, "nothing was committed during the kills");

    // And the members run to the end: every record handled or dead-lettered, none lost.
    let poison_ids: HashSet<u64> = (0..RECORDS as u64)
        .filter(|id| id % POISON_EVERY == POISON_EVERY - 1)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let complete = |done: &HashSet<u64>| done.len() + poison_ids.len() == RECORDS;
    while !complete(&handled(&out).into_iter().collect()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for member in &members {
        signal(member, "-TERM");
    }
    for member in &mut members {
        assert!(member.wait().unwrap().success());
    }
    let runs = handled(&out);
    let done: HashSet<u64> = runs.iter().copied().collect();
    let expected: HashSet<u64> = (0..RECORDS as u64)
        .filter(|id| !poison_ids.contains(id))
        .collect();
    let missing: Vec<&u64> = expected.difference(&done).take(10).collect();
    assert!(
        missing.is_empty(),
        "never handled: {missing:?} (of {})",
        expected.len() - done.len()
    );
    assert!(done.is_disjoint(&poison_ids), "a poison record was handled");
    let dead = dead_lettered(&topic).await;
    assert!(
        poison_ids.is_subset(&dead),
        "poison records missing from the DLT"
    );
    println!(
        "{kills} kills; {} handler runs for {} records: {} re-deliveries; {} dead-letter copies for {} poison records",
        runs.len(),
        expected.len(),
        runs.len() - expected.len(),
        dead_letter_copies(&topic).await.len(),
        poison_ids.len()
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
    let mut child = start(&topic, &group, &out, &[("HANDLE_MICROS", "1000")]);
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
