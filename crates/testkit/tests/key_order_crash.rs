//! Key order across real member processes: three members of one group in key order, SIGKILLed
//! at random and restarted (real rebalances), with transient failures. After every kill: no
//! key was ever in flight twice, no record started before the earlier records of its key were
//! done, and everything the group committed (the offset and the done-offset map above it) was
//! handled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kafkit::consumer::offset_map;

const RECORDS: usize = 24_000;
const PARTITIONS: i32 = 3;
const KEYS: usize = 40;

/// The member processes: killed when the test ends, passed or not (a failed assertion would
/// otherwise leave them running).
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for member in &mut self.0 {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

fn start(topic: &str, group: &str, dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kafkit-test-consumer"))
        .env("KAFKIT_TEST_BROKERS", testkit::brokers())
        .env("TOPIC", topic)
        .env("GROUP", group)
        .env("OUT", dir.join("handled.txt"))
        .env("TRACE", dir.join("trace.txt"))
        .env("ORDER", "key")
        .env("MAX_IN_FLIGHT", "4")
        .env("HANDLE_MICROS", "6000")
        .env("JITTER", "1")
        .env("FAIL_PERCENT", "5")
        .env("COMMIT_MS", "200")
        .env("RUST_LOG", "error")
        .spawn()
        .expect("spawn the test consumer")
}

/// The trace so far, checked from its first line: answers the records done (an `E` line seen)
/// or the first violation.
fn check_trace(
    trace: &str,
    keys: &HashMap<(i32, i64), String>,
    order: &HashMap<(i32, String), Vec<i64>>,
    killed: &HashSet<u32>,
) -> Result<HashSet<(i32, i64)>, String> {
    let mut open: HashMap<String, (u32, i32, i64)> = HashMap::new();
    let mut done: HashSet<(i32, i64)> = HashSet::new();
    // Per partition and key: how many of its records (in offset order) are done, as a prefix.
    let mut prefix: HashMap<(i32, String), usize> = HashMap::new();
    for line in trace.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let [event, partition, offset, key, pid] = words[..] else {
            // A member killed mid-write leaves no torn line: one write per line.
            return Err(format!("malformed trace line {line:?}"));
        };
        let (partition, offset): (i32, i64) = (partition.parse().unwrap(), offset.parse().unwrap());
        let pid: u32 = pid.parse().unwrap();
        assert_eq!(keys[&(partition, offset)], key, "trace names the wrong key");
        match event {
            "S" => {
                // A start while another record of the key is in flight (between its `S` and
                // its `E` or `F`) in a process that was not killed since.
                if let Some((other, p, o)) = open.get(key)
                    && !killed.contains(other)
                {
                    return Err(format!(
                        "{partition}/{offset} of {key} started in {pid} while {p}/{o} ran in {other}"
                    ));
                }
                let sequence = &order[&(partition, key.to_owned())];
                let index = sequence.binary_search(&offset).unwrap();
                let before = prefix
                    .get(&(partition, key.to_owned()))
                    .copied()
                    .unwrap_or(0);
                if before < index {
                    return Err(format!(
                        "{partition}/{offset} of {key} started before {partition}/{} of its key was done",
                        sequence[before]
                    ));
                }
                open.insert(key.to_owned(), (pid, partition, offset));
            }
            "F" => {
                if open.get(key).is_some_and(|(p, ..)| *p == pid) {
                    open.remove(key);
                }
            }
            "E" => {
                if open.get(key).is_some_and(|(p, ..)| *p == pid) {
                    open.remove(key);
                }
                done.insert((partition, offset));
                let sequence = &order[&(partition, key.to_owned())];
                let slot = prefix.entry((partition, key.to_owned())).or_insert(0);
                while *slot < sequence.len() && done.contains(&(partition, sequence[*slot])) {
                    *slot += 1;
                }
            }
            _ => return Err(format!("unknown trace event {line:?}")),
        }
    }
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_in_key_order_sigkilled_at_random_keep_key_order_and_lose_nothing() {
    // Given 24,000 records of 40 keys over 3 partitions, handled in key order (4 in flight per
    // partition) by three member processes, 5% of handler calls failing transiently.
    let topic = testkit::topic("key-crash", PARTITIONS).await;
    testkit::populate(&topic, RECORDS, KEYS).await;
    let records = testkit::read(&topic, RECORDS, Duration::from_secs(60)).await;
    assert_eq!(records.len(), RECORDS);
    let keys: HashMap<(i32, i64), String> = records
        .iter()
        .map(|m| ((m.partition, m.offset), m.key_str().unwrap().to_owned()))
        .collect();
    let mut order: HashMap<(i32, String), Vec<i64>> = HashMap::new();
    for ((partition, offset), key) in &keys {
        order
            .entry((*partition, key.clone()))
            .or_default()
            .push(*offset);
    }
    for offsets in order.values_mut() {
        offsets.sort_unstable();
    }
    let group = testkit::unique("key-crash");
    let dir = std::env::temp_dir().join(testkit::unique("key-crash-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let trace_path = dir.join("trace.txt");
    let trace = || std::fs::read_to_string(&trace_path).unwrap_or_default();
    let mut members = Members((0..3).map(|_| start(&topic, &group, &dir)).collect());
    assert!(testkit::eventually(Duration::from_secs(30), || !trace().is_empty()).await);

    // When a member is SIGKILLed at a random point and restarted, again and again.
    let mut killed = HashSet::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut checked = 0;
    for kill in 1..=8 {
        tokio::time::sleep(Duration::from_millis(300 + next() % 900)).await;
        let victim = (next() % members.0.len() as u64) as usize;
        let pid = members.0[victim].id();
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        members.0[victim].wait().unwrap();
        killed.insert(pid);

        // Then, after each kill: committed first, the trace second (it only grows), so every
        // committed record must be done in it; and the trace so far keeps key order.
        let committed = testkit::committed_maps(&group, &topic, PARTITIONS).await;
        let done = check_trace(&trace(), &keys, &order, &killed)
            .unwrap_or_else(|violation| panic!("after kill {kill}: {violation}"));
        for (partition, offset, metadata) in committed {
            let map = offset_map::done_ranges(offset, &metadata).unwrap();
            for o in (0..offset).chain(map.iter().flat_map(|(start, end)| *start..=*end)) {
                assert!(
                    done.contains(&(partition, o)),
                    "after kill {kill}: {partition}/{o} committed as done, never handled"
                );
                checked += 1;
            }
        }
        members.0[victim] = start(&topic, &group, &dir);
    }
    assert!(checked > 0, "nothing was committed during the kills");

    // And the members run to the end: every record done, in key order throughout.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut done = HashSet::new();
    while Instant::now() < deadline {
        done = check_trace(&trace(), &keys, &order, &killed).unwrap_or_else(|v| panic!("{v}"));
        if done.len() == RECORDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for member in &members.0 {
        Command::new("kill")
            .args(["-TERM", &member.id().to_string()])
            .status()
            .unwrap();
    }
    for member in &mut members.0 {
        assert!(member.wait().unwrap().success());
    }
    let missing: BTreeMap<i32, Vec<i64>> = keys
        .keys()
        .filter(|tp| !done.contains(tp))
        .take(10)
        .fold(BTreeMap::new(), |mut m, (p, o)| {
            m.entry(*p).or_default().push(*o);
            m
        });
    assert!(missing.is_empty(), "never handled: {missing:?}");
    let starts = trace().lines().filter(|l| l.starts_with('S')).count();
    println!("8 kills; {starts} handler calls for {RECORDS} records");
}
