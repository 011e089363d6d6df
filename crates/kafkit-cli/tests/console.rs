//! The web console in a real browser: headless Chromium, driven over WebDriver (chromedriver,
//! Debian's `chromium` and `chromium-driver`), against the real `kafkit serve` on the test
//! broker. Each test takes screenshots of the pages it visits, into
//! `$KAFKIT_CONSOLE_SCREENSHOTS` (docs/console holds the committed ones) or the target
//! directory.
//!
//! The tests run one at a time: each starts a gateway and a browser, and the machine running
//! them may be small.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::endpoint::Endpoint;
use common::kafkit;
use fantoccini::{Client, ClientBuilder, Locator};
use kafkit::{Kafka, Message, Record, Router};
use serde_json::{Value, json};

/// Keys of the gateway under test: one that may do everything, one that may only read.
const KEYS: &str = "admin-key-0123456789:write=*,read=*,create=*;viewer-key-0123456789:read=*";
/// How long a page may take to show what a test waits for.
const WAIT: Duration = Duration::from_secs(60);

/// One browser test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running `kafkit serve` with [`KEYS`], killed on drop.
struct Gateway {
    child: Child,
    base: String,
}

impl Gateway {
    fn start() -> Gateway {
        Gateway::start_with(&[])
    }

    /// With more arguments to `kafkit serve` (`--subscriptions FILE`).
    fn start_with(args: &[&str]) -> Gateway {
        let port = testkit::free_port();
        let mut child = kafkit()
            .env("KAFKA_BROKERS", testkit::brokers())
            .env("KAFKIT_API_KEYS", KEYS)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kafkit serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("kafkit serve exited before it was ready")
                .unwrap();
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if entry["message"] == "kafkit gateway ready" {
                break;
            }
        }
        // Keep draining the log so the gateway never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium behind its own chromedriver; both stop on drop.
struct Browser {
    driver: Child,
    client: Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = testkit::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/deps installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000",
                ],
            }),
        );
        // chromedriver takes a moment to listen.
        let mut attempts = 0;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if attempts < 100 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("starting Chromium through chromedriver: {error}"),
            }
        };
        Browser { driver, client }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The text of the first element `css` selects, waiting for it to appear. A live part of
    /// the page may be replaced between finding and reading: that is tried again.
    async fn text(&self, css: &str) -> String {
        let mut attempts = 0;
        loop {
            let element = self
                .client
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.text().await {
                Ok(text) => return text,
                Err(error) if attempts < 10 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("{css}: {error}"),
            }
        }
    }

    /// The words of that text, one space apart (cells of a row may come tab-separated).
    async fn words(&self, css: &str) -> String {
        self.text(css)
            .await
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether some element matches `css` now.
    async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the field named `name` inside `form_css`.
    async fn fill(&self, form_css: &str, name: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(&format!("{form_css} [name=\"{name}\"]")))
            .await
            .unwrap_or_else(|e| panic!("{form_css} {name}: {e}"));
        field.clear().await.ok();
        field.send_keys(text).await.unwrap();
    }

    async fn select(&self, form_css: &str, name: &str, value: &str) {
        self.client
            .find(Locator::Css(&format!("{form_css} select[name=\"{name}\"]")))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }

    async fn login(&self, gateway: &Gateway, key: &str) {
        self.goto(&gateway.url("/console")).await;
        // Without a session the console sends the browser to the login form.
        assert!(
            self.client
                .current_url()
                .await
                .unwrap()
                .as_str()
                .ends_with("/console/login")
        );
        self.fill("form", "key", key).await;
        self.click("form button[type=submit]").await;
        assert_eq!(self.text("h1").await, "Overview");
    }

    async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Posts a form from the page, with the page's own CSRF token and `fields` (a JavaScript
    /// object's members, e.g. `value: 'forged'`), as a script of the page could: the status.
    async fn post_from_page(&self, path: &str, fields: &str) -> Value {
        self.client
            .execute_async(
                &format!(
                    "const done = arguments[arguments.length - 1];
                     const token = document.querySelector('input[name=_csrf]').value;
                     fetch('{path}', {{method: 'POST',
                         body: new URLSearchParams({{_csrf: token, {fields}}})}})
                       .then(r => done(r.status), e => done(String(e)));"
                ),
                vec![],
            )
            .await
            .unwrap()
    }

    /// Saves a screenshot of the page as `name`.png.
    async fn screenshot(&self, name: &str) {
        let dir = std::env::var("KAFKIT_CONSOLE_SCREENSHOTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console"));
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the browser session; dropping `self` then stops chromedriver.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// A test that failed before [`Browser::close`] still stops its chromedriver.
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A consumer of `topic` in `group` that counts what it handled and remembers the keys.
struct Running {
    handled: Arc<AtomicUsize>,
    keys: Arc<std::sync::Mutex<Vec<String>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<kafkit::Result<()>>,
}

fn consume(topic: &str, group: &str, pause: Duration) -> Running {
    let handled = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut router = Router::new();
    router.register(topic, {
        let (handled, keys) = (handled.clone(), keys.clone());
        move |message: Message<Value>| {
            let (handled, keys) = (handled.clone(), keys.clone());
            async move {
                tokio::time::sleep(pause).await;
                if let Some(key) = message.key_str() {
                    keys.lock().unwrap().push(key.to_owned());
                }
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    // A new group starts at the oldest record, as a service's first deployment would.
    let mut config = testkit::config();
    config.auto_offset_reset = kafkit::config::OffsetReset::Earliest;
    let consumer = Kafka::connect(&config)
        .unwrap()
        .consumer(group, router)
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        consumer
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        handled,
        keys,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_produce_from_the_form_and_find_the_record() {
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = testkit::topic("ui-produce", 2).await;
    testkit::populate(&topic, 5, 5).await;
    let gateway = Gateway::start();
    let browser = Browser::start().await;
    browser.goto(&gateway.url("/console")).await;
    browser.screenshot("login").await;
    // Log in with the admin key: the overview shows the cluster.
    browser.login(&gateway, "admin-key-0123456789").await;
    assert!(!browser.text("#cluster-id").await.is_empty());
    browser.screenshot("overview").await;

    // The topic list finds the topic by search, with its partitions and records.
    browser
        .goto(&gateway.url(&format!("/console/topics?q={topic}")))
        .await;
    let row = browser.words("#topics tbody tr").await;
    assert_eq!(row, format!("{topic} 2 5"), "{row}");
    browser.goto(&gateway.url("/console/topics")).await;
    browser.screenshot("topics").await;

    // Produce one record from the form, to partition 1, with a key and a header.
    browser
        .goto(&gateway.url(&format!("/console/topics/{topic}")))
        .await;
    browser.fill("#produce form", "key", "order-42").await;
    browser
        .fill("#produce form", "value", "{\"id\": 42, \"item\": \"book\"}")
        .await;
    browser
        .fill("#produce form", "headers", "tenant: acme")
        .await;
    browser.fill("#produce form", "partition", "1").await;
    browser.click("#produce button[type=submit]").await;

    // The page that follows says where it went and shows it, newest first.
    let produced = browser.text("#produced").await;
    assert!(produced.contains("partition 1 at offset"), "{produced}");
    let offset: i64 = produced
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .parse()
        .unwrap();
    let first = browser.words("#messages tbody tr").await;
    assert!(first.contains("order-42"), "{first}");
    assert!(first.contains("tenant: acme"), "{first}");
    assert!(first.contains("\"item\": \"book\""), "{first}");
    browser.screenshot("topic").await;

    // The broker has it exactly so.
    let records = testkit::read(&topic, 6, Duration::from_secs(10)).await;
    let record = records
        .iter()
        .find(|m| m.key_str() == Some("order-42"))
        .expect("the produced record");
    assert_eq!((record.partition, record.offset), (1, offset));
    assert_eq!(record.header_value("tenant"), Some(&b"acme"[..]));

    // The same record in hex, found by its key with the browser's filter.
    browser
        .goto(&gateway.url(&format!(
            "/console/topics/{topic}?partition=1&from=oldest&format=hex&key=order-42"
        )))
        .await;
    let rows = browser
        .client
        .find_all(Locator::Css("#messages tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        browser
            .text("#messages td.value pre")
            .await
            .starts_with("7b 22 69 64")
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_lag_falls_as_its_consumer_runs_then_its_offsets_are_reset() {
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = testkit::topic("ui-lag", 1).await;
    testkit::populate(&topic, 30, 3).await;
    // The group starts at offset 0: 30 records behind.
    let group = testkit::unique("ui-group");
    let admin = testkit::kafka().admin().unwrap();
    admin
        .commit_offsets(&group, &topic, &[(0, 0)])
        .await
        .unwrap();
    let gateway = Gateway::start();
    let browser = Browser::start().await;
    browser.login(&gateway, "admin-key-0123456789").await;
    browser
        .goto(&gateway.url(&format!("/console/groups/{group}")))
        .await;
    assert_eq!(browser.text("#total-lag").await, "30");

    // Its consumer runs: the page refreshes itself (no reload) until the lag is 0.
    let consumer = consume(&topic, &group, Duration::from_millis(100));
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag: i64 = browser.text("#total-lag").await.parse().unwrap();
        if seen.last() != Some(&lag) {
            seen.push(lag);
        }
        if lag == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stayed at {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The live part shows the consumer as a member while it runs.
    assert_eq!(browser.text("#member-count").await, "1");
    assert_eq!(seen.first(), Some(&30));
    assert!(
        seen.windows(2).all(|w| w[1] < w[0]),
        "lag only falls: {seen:?}"
    );
    assert_eq!(consumer.handled.load(Ordering::SeqCst), 30);
    // The chart has several samples by now.
    let samples = browser
        .script("return document.querySelector('svg.chart').getAttribute('aria-label')")
        .await;
    assert!(samples.as_str().unwrap().contains("latest 0"), "{samples}");
    browser.screenshot("group").await;
    // The topic's page lists the group among its readers, with its lag.
    browser
        .goto(&gateway.url(&format!("/console/topics/{topic}")))
        .await;
    assert_eq!(browser.words("#readers tbody").await, format!("{group} 0"));
    browser.goto(&gateway.url("/console/groups?sort=lag")).await;
    assert!(browser.text("#groups").await.contains(&group));
    browser.screenshot("groups").await;

    // Once the consumer stopped the group is empty: reset it to the earliest offset, with a
    // confirmation.
    consumer.stop().await;
    assert_eq!(
        testkit::committed(&group, &topic).await,
        vec![(0, Some(30), 30)]
    );
    browser
        .goto(&gateway.url(&format!("/console/groups/{group}")))
        .await;
    browser.select("#reset form", "to", "earliest").await;
    browser.click("#reset button[type=submit]").await;
    let plan = browser.words("#plan tbody tr").await;
    assert_eq!(plan, "0 30 0");
    // Nothing changed before the confirmation.
    assert_eq!(
        testkit::committed(&group, &topic).await,
        vec![(0, Some(30), 30)]
    );
    browser.screenshot("reset").await;
    browser.click("#confirm-reset").await;
    assert!(browser.text("#reset-done").await.contains("reset"));
    assert_eq!(
        testkit::committed(&group, &topic).await,
        vec![(0, Some(0), 30)]
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_record_is_replayed_and_its_consumer_handles_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let source = testkit::topic("ui-dlt", 1).await;
    let dlt = testkit::empty_dead_letter_topic(&source, 1).await;
    testkit::send(vec![
        Record::to(&dlt)
            .key("order-7")
            .header(kafkit::dead_letter::ORIGINAL_TOPIC, source.as_str())
            .header(kafkit::dead_letter::ERROR_KIND, "permanent")
            .header(kafkit::dead_letter::ERROR_MESSAGE, "price missing")
            .header(kafkit::dead_letter::ATTEMPTS, "3")
            .json(&json!({"id": 7}))
            .unwrap(),
    ])
    .await;
    // The service's consumer runs on the source topic.
    let consumer = consume(&source, &testkit::unique("ui-dlt-service"), Duration::ZERO);
    let gateway = Gateway::start();
    let browser = Browser::start().await;
    browser.login(&gateway, "admin-key-0123456789").await;
    browser.goto(&gateway.url("/console/dead-letters")).await;
    let row = browser.words("#dead-letters tbody").await;
    assert!(row.contains(&format!("{dlt} {source} 1 1")), "{row}");
    browser.screenshot("dead-letters").await;

    // The record shows why it failed.
    browser
        .goto(&gateway.url(&format!("/console/dead-letters/{dlt}")))
        .await;
    let record = browser.words("#dead-letter-records tbody tr").await;
    for part in ["permanent", "price missing", "order-7", "\"id\": 7"] {
        assert!(record.contains(part), "{part}: {record}");
    }

    // Replay it: one record goes back, and the consumer handles it.
    browser.click("#replay-next").await;
    assert_eq!(browser.text("#replayed").await, "1");
    assert!(
        testkit::eventually(WAIT, || consumer
            .keys
            .lock()
            .unwrap()
            .contains(&"order-7".to_owned()))
        .await,
        "the consumer never saw the replayed record"
    );
    // The dead-letter page now marks it replayed, with nothing left to replay.
    browser
        .goto(&gateway.url(&format!("/console/dead-letters/{dlt}")))
        .await;
    assert_eq!(browser.text("#pending").await, "0");
    assert!(
        browser
            .words("#dead-letter-records tbody tr")
            .await
            .ends_with("yes")
    );
    assert!(!browser.has("#replay-next").await);
    consumer.stop().await;
    browser.close().await;
}

impl Running {
    /// Waits until the consumer handled `expected` (in any order), then a little longer so
    /// a duplicate would show, and checks it handled exactly those.
    async fn handled_exactly(&self, expected: &[&str]) {
        let count = expected.len();
        assert!(
            testkit::eventually(WAIT, || self.keys.lock().unwrap().len() >= count).await,
            "the consumer handled {:?}, not {expected:?}",
            self.keys.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut keys = self.keys.lock().unwrap().clone();
        keys.sort();
        let mut expected: Vec<String> = expected.iter().map(|k| (*k).to_owned()).collect();
        expected.sort();
        assert_eq!(keys, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_and_matching_dead_letters_are_replayed_alone_and_replay_all_takes_only_the_rest() {
    let _one = ONE_AT_A_TIME.lock().await;
    let source = testkit::topic("ui-dlt-chosen", 1).await;
    let dlt = testkit::dead_letter_topic(
        &source,
        &[
            ("order-1", "permanent"),
            ("order-2", "permanent"),
            ("order-3", "invalid"),
            ("order-4", "permanent"),
            ("order-5", "invalid"),
        ],
    )
    .await;
    let consumer = consume(
        &source,
        &testkit::unique("ui-dlt-chosen-service"),
        Duration::ZERO,
    );
    let gateway = Gateway::start();
    let browser = Browser::start().await;
    browser.login(&gateway, "admin-key-0123456789").await;
    let page = gateway.url(&format!("/console/dead-letters/{dlt}"));

    // Tick order-2 (offset 1) of the five and replay the selection: the consumer handles it
    // and nothing else.
    browser.goto(&page).await;
    browser.click("input.select[value=\"0/1\"]").await;
    browser.click("#replay-selected-button").await;
    assert_eq!(browser.text("#replayed").await, "1");
    assert_eq!(browser.text("#skipped-count").await, "0");
    consumer.handled_exactly(&["order-2"]).await;

    // "Replay this record" on order-4's row.
    browser.goto(&page).await;
    assert_eq!(browser.text("#pending").await, "4");
    browser.click("button.replay-one[value=\"0/3\"]").await;
    assert_eq!(browser.text("#replayed").await, "1");
    consumer.handled_exactly(&["order-2", "order-4"]).await;

    // The page marks the two replayed, without controls on their rows.
    browser.goto(&page).await;
    let replayed = browser
        .script(
            "return [...document.querySelectorAll('#dead-letter-records tbody tr')]
                .map(r => r.querySelector('td.replayed').textContent)",
        )
        .await;
    assert_eq!(replayed, json!(["no", "yes", "no", "yes", "no"]));
    assert!(!browser.has("input.select[value=\"0/1\"]").await);
    browser.screenshot("dead-letter").await;

    // Filter by error kind on the server, then replay all matching: the two invalid ones.
    browser
        .fill("#dead-letter-filter", "error_kind", "invalid")
        .await;
    browser
        .click("#dead-letter-filter button[type=submit]")
        .await;
    assert!(
        browser
            .text("#filter-summary")
            .await
            .starts_with("2 matching")
    );
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#dead-letter-records tbody tr"))
            .await
            .unwrap()
            .len(),
        2
    );
    browser.screenshot("dead-letter-filter").await;
    browser.click("#replay-matching-button").await;
    assert_eq!(browser.text("#replayed").await, "2");
    consumer
        .handled_exactly(&["order-2", "order-4", "order-3", "order-5"])
        .await;

    // Replay all takes the one left, and none of the four a second time.
    browser.goto(&page).await;
    assert_eq!(browser.text("#replay-all").await, "Replay all 1");
    browser.click("#replay-all").await;
    assert_eq!(browser.text("#replayed").await, "1");
    consumer
        .handled_exactly(&["order-1", "order-2", "order-3", "order-4", "order-5"])
        .await;
    browser.goto(&page).await;
    assert_eq!(browser.text("#pending").await, "0");
    consumer.stop().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_sees_no_write_control_and_a_forged_post_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = testkit::topic("ui-readonly", 1).await;
    let group = testkit::unique("ui-readonly-group");
    testkit::kafka()
        .admin()
        .unwrap()
        .commit_offsets(&group, &topic, &[(0, 0)])
        .await
        .unwrap();
    let gateway = Gateway::start();
    let browser = Browser::start().await;
    browser.login(&gateway, "viewer-key-0123456789").await;
    assert_eq!(browser.text(".badge").await, "read-only");

    // No produce form, no topic creation, no offset reset.
    browser
        .goto(&gateway.url(&format!("/console/topics/{topic}")))
        .await;
    assert!(browser.has("#partitions").await);
    assert!(!browser.has("#produce").await);
    browser.goto(&gateway.url("/console/topics")).await;
    assert!(!browser.has("#create-topic").await);
    browser
        .goto(&gateway.url(&format!("/console/groups/{group}")))
        .await;
    assert!(browser.has("#lag").await);
    assert!(!browser.has("#reset").await);

    // No replay control on a dead-letter page, with or without a filter.
    let dlt = testkit::dead_letter_topic(&topic, &[("order-1", "permanent")]).await;
    for query in ["", "?error_kind=permanent"] {
        browser
            .goto(&gateway.url(&format!("/console/dead-letters/{dlt}{query}")))
            .await;
        assert!(browser.has("#dead-letter-records tbody tr").await);
        for control in [
            "#replay-next",
            "#replay-all",
            "#replay-selected",
            "#replay-one",
            "#replay-matching",
            "input.select",
            "button.replay-one",
        ] {
            assert!(!browser.has(control).await, "{control}");
        }
    }
    // Forged replays of a chosen record or a filter are refused.
    for body in [
        "choice: 'selected', at: '0/0'",
        "choice: 'matching', error_kind: 'permanent'",
    ] {
        let status = browser
            .post_from_page(&format!("/console/dead-letters/{dlt}/replay"), body)
            .await;
        assert_eq!(status, json!(403), "{body}");
    }

    // A post forged in the page, with the session's own CSRF token, is refused.
    browser
        .goto(&gateway.url(&format!("/console/topics/{topic}")))
        .await;
    let status = browser
        .post_from_page(
            &format!("/console/topics/{topic}/produce"),
            "value: 'forged'",
        )
        .await;
    assert_eq!(status, json!(403));
    let status = browser
        .post_from_page(
            &format!("/console/groups/{group}/reset"),
            &format!("topic: '{topic}', to: 'latest', confirm: 'yes'"),
        )
        .await;
    assert_eq!(status, json!(403));
    // Nothing was written, nothing moved.
    assert!(
        testkit::read(&topic, 1, Duration::from_secs(2))
            .await
            .is_empty()
    );
    assert_eq!(
        testkit::committed(&group, &topic).await,
        vec![(0, Some(0), 0)]
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_a_key_header_and_value_never_runs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = testkit::topic("ui-xss", 1).await;
    // Each would set a window flag and change the title if the page ran it.
    let script = |n: u8| format!("<script>window.__xss={n};document.title='pwned'</script>");
    let image = "<img src=x onerror=\"window.__xss=9;document.title='pwned'\">";
    testkit::send(vec![
        Record::to(&topic)
            .key(script(1))
            .header(script(2), format!("{}{image}", script(3)))
            .text(format!("{}{image}", script(4))),
        Record::to(&topic).key("json").text(format!(
            "{{\"html\": \"{}\"}}",
            script(5).replace('"', "\\\"")
        )),
    ])
    .await;
    let gateway = Gateway::start();
    let browser = Browser::start().await;
    browser.login(&gateway, "admin-key-0123456789").await;
    for format in ["auto", "text", "json", "hex"] {
        browser
            .goto(&gateway.url(&format!(
                "/console/topics/{topic}?from=oldest&format={format}"
            )))
            .await;
        browser.text("#messages").await;
        // Nothing ran: no flag, the title is the console's.
        assert_eq!(
            browser.script("return typeof window.__xss").await,
            json!("undefined"),
            "{format}"
        );
        let title = browser.client.title().await.unwrap();
        assert_eq!(title, format!("{topic} · kafkit console"), "{format}");
        if format == "auto" {
            browser.screenshot("escaped").await;
        }
        if format != "hex" {
            // The markup is shown as text, exactly as it was sent.
            let key = browser.text("#messages tbody tr:first-child td.key").await;
            assert_eq!(key, script(1), "{format}");
            let value = browser
                .text("#messages tbody tr:first-child td.value pre")
                .await;
            assert!(value.contains(image), "{format}: {value}");
        }
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_subscription_page_shows_its_endpoint_failures_and_dead_letter_topic() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Ten records the endpoint takes and one of key `bad` that it refuses with a 422.
    let topic = testkit::topic("ui-push", 1).await;
    let mut records: Vec<Record> = (0..10)
        .map(|i| {
            Record::to(&topic)
                .key(format!("k{i}"))
                .json(&json!({"id": i}))
                .unwrap()
        })
        .collect();
    records.insert(
        3,
        Record::to(&topic)
            .key("bad")
            .json(&json!({"id": -1}))
            .unwrap(),
    );
    testkit::send(records).await;
    let endpoint = Endpoint::start(json!({"status_by_key": {"bad": 422}}));
    let port = endpoint.port();
    let file = std::env::temp_dir().join(format!("{}.toml", testkit::unique("ui-push")));
    std::fs::write(
        &file,
        format!(
            "[[subscription]]\nname = \"billing\"\ntopics = [\"{topic}\"]\nendpoint = \"http://127.0.0.1:{port}/hooks\"\n"
        ),
    )
    .unwrap();
    let gateway = Gateway::start_with(&["--subscriptions", file.to_str().unwrap()]);
    let browser = Browser::start().await;
    browser.login(&gateway, "viewer-key-0123456789").await;

    // The subscription page: everything delivered, nothing behind, the 422 among the failures.
    let page = gateway.url("/console/subscriptions/billing");
    let started = std::time::Instant::now();
    loop {
        browser.goto(&page).await;
        if browser.text("#delivered").await == "10" && browser.text("#lag").await == "0" {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "not delivered: {}",
            browser.words("main").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(browser.text("h1").await, "Push subscription billing");
    assert_eq!(
        browser.text("#endpoint").await,
        format!("http://127.0.0.1:{port}/hooks")
    );
    assert_eq!(browser.text("#state").await, "ok");
    assert_eq!(browser.text("#failed").await, "1");
    assert_eq!(browser.text("#requests-in-flight").await, "0");
    assert_eq!(browser.text("#limit").await, "1000 of 1000 (adaptive)");
    // Its one partition: topic, partition, nothing queued, nothing in flight (then its lag,
    // which may not be sampled yet).
    assert_eq!(
        browser.words("#partitions thead").await,
        "Topic Partition Queued In flight Lag Paused"
    );
    let partition = browser.words("#partitions tbody tr").await;
    assert!(
        partition.starts_with(&format!("{topic} 0 0 0 ")),
        "{partition}"
    );
    let failure = browser.words("#recent-failures tbody tr").await;
    for part in [
        format!("{topic}/0/3"),
        "4xx".to_owned(),
        r#"HTTP 422 Unprocessable Entity: {"error":"rejected bad"}"#.to_owned(),
    ] {
        assert!(failure.contains(&part), "{part}: {failure}");
    }
    // Its lag over time, as on the group's page: the group's lag sampled at each visit (and
    // by the page's live refresh), down to 0 now.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    browser.goto(&page).await;
    let label = browser
        .script("return document.querySelector('#lag-history svg.chart')?.getAttribute('aria-label') ?? null")
        .await;
    let main = browser.words("main").await;
    let label = label
        .as_str()
        .unwrap_or_else(|| panic!("no lag chart: {main}"))
        .to_owned();
    let (samples, latest) = label
        .strip_prefix("Lag over time: ")
        .and_then(|rest| rest.split_once(" samples, latest "))
        .unwrap_or_else(|| panic!("{label}"));
    assert!(samples.parse::<usize>().unwrap() >= 2, "{label}");
    assert_eq!(latest, "0", "{label}");
    assert!(browser.has("#lag-history svg.chart polyline.series").await);
    assert_eq!(
        browser
            .script("return document.querySelector('#lag-history').getAttribute('data-refresh')")
            .await,
        json!("/console/subscriptions/billing/live")
    );
    browser.screenshot("push-subscription").await;

    // Its dead-letter topic is one click away, holding the refused record.
    let dlt = format!("{topic}.dlq");
    assert_eq!(browser.text("#dead-letter-topics a").await, dlt);
    browser.click("#dead-letter-topics a").await;
    let started = std::time::Instant::now();
    loop {
        let record = browser.words("#dead-letter-records tbody tr").await;
        if record.contains("HTTP 422") {
            assert!(record.contains("bad"), "{record}");
            break;
        }
        assert!(started.elapsed() < WAIT, "no dead letter: {record}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser
            .goto(&gateway.url(&format!("/console/dead-letters/{dlt}")))
            .await;
    }

    // The list shows it with its state and counters.
    browser.goto(&gateway.url("/console/subscriptions")).await;
    let row = browser.words("#subscriptions tbody tr").await;
    assert!(row.starts_with("billing ok"), "{row}");
    assert!(row.ends_with("0 10 1"), "{row}");
    browser.close().await;
}
