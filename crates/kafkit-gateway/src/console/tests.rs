//! The console through the router: login and cookies, CSRF, grants, escaping, the embedded
//! broker's banners, and the OpenAPI document left alone. The browser tests
//! (crates/kafkit-cli/tests/console.rs) drive the same pages in headless Chromium.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kafkit::Record;

use crate::router;
use crate::testing::{Answer, call, embedded_state, get, records_in, state, state_with_keys};

/// A form `POST` with `cookie`.
fn form(path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Request<Body> {
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.join("&")))
        .unwrap();
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
    }
    request
}

fn encode(text: &str) -> String {
    super::page::segment(text)
}

fn with_cookie(mut request: Request<Body>, cookie: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    request
}

/// The login form's token cookie (`name=value`) and the token its form carries.
async fn login_form(app: &Router) -> (String, String) {
    let answer = call(app, get("/console/login")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
    (cookie.split(';').next().unwrap().to_owned(), csrf(&answer))
}

/// The login form posted with `key` (and the form's token).
async fn login_post(app: &Router, key: &str) -> Request<Body> {
    let (cookie, token) = login_form(app).await;
    form(
        "/console/login",
        Some(&cookie),
        &[("_csrf", &token), ("key", key)],
    )
}

/// Logs in with `key`: the session cookie (`name=value`).
async fn login(app: &Router, key: &str) -> String {
    let answer = call(app, login_post(app, key).await).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token a page's forms carry.
fn csrf(answer: &Answer) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = answer.text.find(marker).expect("a form with a CSRF token") + marker.len();
    answer.text[start..][..64].to_owned()
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_pages_need_it() {
    let app = router(state_with_keys("admin:write=*,read=*,create=*"));
    // Without a session a page redirects to the login form; a form post is refused.
    let answer = call(&app, get("/console/topics")).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers[header::LOCATION], "/console/login");
    let answer = call(&app, form("/console/topics", None, &[("name", "x")])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // A wrong key: 401 and the form again, no session.
    let answer = call(&app, login_post(&app, "nope").await).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let set_cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.starts_with("kafkit_login="), "{set_cookie}");
    assert!(answer.text.contains("Unknown API key"));
    // The right key without the form's token, or with another one: 403, no session (another
    // site's page cannot log a browser in).
    let (login_cookie, _) = login_form(&app).await;
    for (cookie, token) in [(None, ""), (Some(login_cookie.as_str()), "forged")] {
        let post = form(
            "/console/login",
            cookie,
            &[("_csrf", token), ("key", "admin")],
        );
        let answer = call(&app, post).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
        let set_cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(!set_cookie.contains("kafkit_console"), "{set_cookie}");
    }
    // The right key: a session cookie, HttpOnly and SameSite=Strict, scoped to the console.
    let answer = call(&app, login_post(&app, "admin").await).await;
    let set_cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap();
    let answer = call(&app, with_cookie(get("/console/topics"), cookie)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(answer.text.contains("Create a topic"));
    // Every answer carries the strict Content-Security-Policy.
    let policy = answer.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"));
    // Logging out forgets the session.
    let token = csrf(&answer);
    let answer = call(
        &app,
        form("/console/logout", Some(cookie), &[("_csrf", &token)]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let answer = call(&app, with_cookie(get("/console/topics"), cookie)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn writes_need_the_csrf_token_and_a_write_grant() {
    let topic = testkit::topic("console-writes", 1).await;
    let app = router(state_with_keys("admin:write=*,read=*;viewer:read=*"));
    let admin = login(&app, "admin").await;
    let viewer = login(&app, "viewer").await;
    let page = call(
        &app,
        with_cookie(get(&format!("/console/topics/{topic}")), &admin),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Produce a record"));
    let admin_token = csrf(&page);
    let produce = format!("/console/topics/{topic}/produce");
    // Without the token, or with another session's: refused, nothing produced.
    let answer = call(&app, form(&produce, Some(&admin), &[("value", "v")])).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // The read-only key sees no write control...
    let page = call(
        &app,
        with_cookie(get(&format!("/console/topics/{topic}")), &viewer),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text.contains("Produce a record") && !page.text.contains("/produce"));
    assert!(page.text.contains("read-only"));
    let viewer_token = csrf(&page);
    let answer = call(
        &app,
        form(
            &produce,
            Some(&viewer),
            &[("_csrf", &admin_token), ("value", "v")],
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // ...and a forged post with its own valid token is refused by the grant check.
    let answer = call(
        &app,
        form(
            &produce,
            Some(&viewer),
            &[("_csrf", &viewer_token), ("value", "v")],
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert!(answer.text.contains("may not write"), "{}", answer.text);
    assert_eq!(records_in(&topic).await, 0);
    // The admin's post with its token produces one record and shows where it went.
    let answer = call(
        &app,
        form(
            &produce,
            Some(&admin),
            &[
                ("_csrf", &admin_token),
                ("key", "k"),
                ("value", "hello"),
                ("headers", "h: 1"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let location = answer.headers[header::LOCATION].to_str().unwrap();
    assert!(location.ends_with("produced=0:0"), "{location}");
    assert_eq!(records_in(&topic).await, 1);
    let page = call(&app, with_cookie(get(location), &admin)).await;
    assert!(
        page.text
            .contains("Record produced to partition 0 at offset 0")
    );
    assert!(page.text.contains("hello"));
}

#[tokio::test]
async fn record_contents_are_escaped() {
    let topic = testkit::topic("console-xss", 1).await;
    let script = "<script>document.title='pwned'</script>";
    testkit::send(vec![
        Record::to(&topic)
            .key(format!("k{script}"))
            .header(format!("h{script}"), format!("v{script}"))
            .text(format!("{{\"x\": \"{script}\"}} {script}")),
    ])
    .await;
    let app = router(state());
    for format in ["auto", "text", "json"] {
        let answer = call(
            &app,
            get(&format!("/console/topics/{topic}?format={format}")),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert!(!answer.text.contains("<script>document"), "{format}");
        assert!(
            answer.text.contains("&lt;script&gt;document.title"),
            "{format}"
        );
    }
}

#[tokio::test]
async fn the_embedded_broker_shows_banners_at_once() {
    let (_cluster, state) = embedded_state();
    state
        .admin()
        .ensure_topics(&[
            kafkit::TopicSpec::new("orders", 1),
            kafkit::TopicSpec::new("orders.dlq", 1),
        ])
        .await
        .unwrap();
    let app = router(state);
    let began = std::time::Instant::now();
    // What it cannot do: a banner, at once.
    for path in [
        "/console",
        "/console/groups",
        "/console/groups/some-group",
        "/console/topics/orders",
    ] {
        let answer = call(&app, get(path)).await;
        assert!(
            answer.text.contains("embedded development broker")
                || answer.text.contains("Not available on this broker"),
            "{path}: {}",
            answer.text
        );
    }
    // What it can do works: topics, the browser, dead letters.
    for path in [
        "/console/topics",
        "/console/dead-letters",
        "/console/dead-letters/orders.dlq",
    ] {
        let answer = call(&app, get(path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        assert!(answer.text.contains("orders"), "{path}");
    }
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn the_console_is_not_in_the_openapi_document() {
    let app = router(state());
    let answer = call(&app, get("/openapi.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!answer.text.contains("/console"));
    // Its assets come from the binary.
    let answer = call(&app, get("/console/assets/console.js")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.text.contains("data-refresh"));
}

#[tokio::test]
async fn a_topic_is_created_and_a_page_exported_as_json_and_csv() {
    let app = router(state_with_keys("admin:write=*,read=*,create=*"));
    let admin = login(&app, "admin").await;
    let page = call(&app, with_cookie(get("/console/topics"), &admin)).await;
    let token = csrf(&page);
    // Create a topic of 2 partitions from the form.
    let name = testkit::unique("console-created");
    let answer = call(
        &app,
        form(
            "/console/topics",
            Some(&admin),
            &[("_csrf", &token), ("name", &name), ("partitions", "2")],
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let admin_client = testkit::kafka().admin().unwrap();
    assert_eq!(
        admin_client
            .describe_topic(&name)
            .await
            .unwrap()
            .partitions
            .len(),
        2
    );
    // Two records, exported as JSON (the API's message view) and CSV (formulas defused).
    testkit::send(vec![
        Record::to(&name).partition(0).key("k1").text("{\"id\": 1}"),
        Record::to(&name)
            .partition(0)
            .key("k2")
            .text("=HYPERLINK(\"x\")"),
    ])
    .await;
    let path = format!("/console/topics/{name}?from=oldest");
    let answer = call(
        &app,
        with_cookie(get(&format!("{path}&export=json")), &admin),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body[0]["value"], serde_json::json!({"id": 1}));
    assert_eq!(answer.body[1]["key"], "k2");
    let answer = call(
        &app,
        with_cookie(get(&format!("{path}&export=csv")), &admin),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let lines: Vec<&str> = answer.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", answer.text);
    assert!(lines[1].starts_with("\"0\",\"0\","), "{}", lines[1]);
    assert!(
        lines[2].ends_with("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        lines[2]
    );
    // The key filter keeps one of them.
    let answer = call(
        &app,
        with_cookie(get(&format!("{path}&key=k2&export=json")), &admin),
    )
    .await;
    assert_eq!(answer.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn over_https_the_session_cookie_is_secure() {
    // serve_tls marks its requests; the login then sets a Secure cookie.
    // It is __Host- prefixed, so for the whole origin (which the prefix requires), set only
    // over TLS and never by a sibling domain; so is the login form's token.
    let app = router(state_with_keys("admin:read=*")).layer(axum::Extension(super::Https));
    let (login_cookie, _) = login_form(&app).await;
    assert!(
        login_cookie.starts_with("__Host-kafkit_login="),
        "{login_cookie}"
    );
    let answer = call(&app, login_post(&app, "admin").await).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let set_cookie = answer.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set_cookie.starts_with("__Host-kafkit_console="),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("; Path=/;"), "{set_cookie}");
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    // The page reads that cookie, and no other.
    let cookie = set_cookie.split(';').next().unwrap();
    let page = call(&app, with_cookie(get("/console/topics"), cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let plain = cookie.replace("__Host-", "");
    let page = call(&app, with_cookie(get("/console/topics"), &plain)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_unknown_console_path_is_a_404_page_in_the_layout() {
    let app = router(state());
    for path in ["/console/nope", "/console/topics/a/b/c"] {
        let answer = call(&app, get(path)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            answer.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        // The console's navigation around a message naming the path.
        assert!(answer.text.contains("<nav>"), "{}", answer.text);
        assert!(answer.text.contains("id=\"not-found\""));
        assert!(answer.text.contains(&format!("<code>{path}</code>")));
    }
    // A keyed console sends a stranger to the login form instead.
    let keyed = router(state_with_keys("admin:write=*,read=*,create=*"));
    let answer = call(&keyed, get("/console/nope")).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie = login(&keyed, "admin").await;
    let answer = call(&keyed, with_cookie(get("/console/nope"), &cookie)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn failed_logins_from_one_address_are_limited_then_refused_with_429() {
    use crate::http::auth::throttle::MAX_AUTH_FAILURES as MAX_LOGIN_FAILURES;
    use axum::extract::ConnectInfo;
    let app = router(state_with_keys("admin:write=*,read=*,create=*"));
    let (cookie, token) = login_form(&app).await;
    let from = |address: &str, key: &str| {
        let fields = [("_csrf", token.as_str()), ("key", key)];
        let mut request = form("/console/login", Some(&cookie), &fields);
        let peer: std::net::SocketAddr = address.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    };
    // Wrong keys are 401 up to the limit.
    for _ in 0..MAX_LOGIN_FAILURES {
        let answer = call(&app, from("192.0.2.1:5000", "guess")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    // Then even the right key from that address is refused, saying why and for how long.
    let refused = call(&app, from("192.0.2.1:5001", "admin")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.text.contains("Too many failed logins"),
        "{}",
        refused.text
    );
    let wait: u64 = refused.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let set_cookie = refused.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        !set_cookie.contains("kafkit_console"),
        "no session: {set_cookie}"
    );
    // Another address logs in.
    let other = call(&app, from("192.0.2.2:5000", "admin")).await;
    assert_eq!(other.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn browse_filters_apply_on_the_server_beyond_the_page_and_say_how_much_was_read() {
    let topic = testkit::topic("console-filter-scan", 1).await;
    testkit::populate(&topic, 300, 300).await;
    let app = router(state());
    // Ten records a page, but the one keyed key-250 is found, oldest first or newest first.
    for from in ["oldest", "newest"] {
        let answer = call(
            &app,
            get(&format!(
                "/console/topics/{topic}?from={from}&limit=10&key=key-250"
            )),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.text.matches("<tr data-offset=").count(), 1, "{from}");
        assert!(answer.text.contains("data-offset=\"250\""), "{from}");
        assert!(
            answer
                .text
                .contains(" matching the filters, of 300 records read"),
            "{from}: {}",
            answer.text
        );
    }
    // A filtered page's next page is filtered too, and starts after the last record read:
    // `"id":2` keeps ids 2, 20-29 and 200-299; eleven a page.
    let page = |path: String| {
        let app = app.clone();
        async move {
            let answer = call(&app, get(&path)).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            let shown: Vec<String> = answer
                .text
                .split("<tr data-offset=\"")
                .skip(1)
                .map(|row| row.split('"').next().unwrap().to_owned())
                .collect();
            let next = answer
                .text
                .split("id=\"next-page\" href=\"")
                .nth(1)
                .map(|rest| rest.split('"').next().unwrap().replace("&amp;", "&"));
            (shown, next)
        }
    };
    let (shown, next) = page(format!(
        "/console/topics/{topic}?from=oldest&limit=11&value=%22id%22%3A2"
    ))
    .await;
    let expected: Vec<String> = std::iter::once(2)
        .chain(20..30)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(shown, expected);
    let next = next.expect("a next page");
    assert!(
        next.contains("offset=30&") && next.contains("&value=%22id%22%3A2"),
        "{next}"
    );
    let (shown, _) = page(next).await;
    let expected: Vec<String> = (200..211).map(|i| i.to_string()).collect();
    assert_eq!(shown, expected, "the next page is filtered");

    // A JSON path without `=` keeps the records that have the field: every one here.
    let (shown, _) = page(format!(
        "/console/topics/{topic}?from=oldest&limit=11&json=id"
    ))
    .await;
    let expected: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    assert_eq!(shown, expected);
    let (shown, _) = page(format!(
        "/console/topics/{topic}?from=oldest&limit=11&json=nope"
    ))
    .await;
    assert!(shown.is_empty(), "{shown:?}");
}

#[tokio::test]
async fn a_group_page_marks_retry_topics_and_shows_their_backlog() {
    // Given a group that committed offset 0 on a topic with 3 records and on its first retry
    // tier with 5 records (Spring-style names are retry topics too).
    let source = testkit::topic("console-retried", 1).await;
    let tier = format!("{source}.retry.1");
    let admin = testkit::kafka().admin().unwrap();
    admin
        .ensure_topics(&[kafkit::TopicSpec::new(&tier, 1)])
        .await
        .unwrap();
    testkit::populate(&source, 3, 1).await;
    testkit::populate(&tier, 5, 1).await;
    let group = testkit::unique("console-retrying");
    for topic in [&source, &tier] {
        admin
            .commit_offsets(&group, topic, &[(0, 0)])
            .await
            .unwrap();
    }
    let app = router(state_with_keys("admin:write=*,read=*,create=*"));
    let cookie = login(&app, "admin").await;

    // When the group's page is shown.
    let page = call(
        &app,
        with_cookie(get(&format!("/console/groups/{group}")), &cookie),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);

    // Then the retry tier's row says which tier of which topic it is, and the backlog waiting
    // on retry topics is its lag alone, beside the total lag of both.
    assert!(
        page.text.contains(&format!(
            "<span class=\"badge\">retry tier 1 of {source}</span>"
        )),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains("Retry backlog <strong id=\"retry-backlog\">5</strong>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("<strong id=\"total-lag\">8</strong>"));
}

#[tokio::test]
async fn only_a_logged_in_viewer_starts_the_lag_sampler() {
    let state = state_with_keys("admin:read=*");
    let console = std::sync::Arc::new(super::Console::default());
    let app = Router::new()
        .merge(super::routes_with(&state, console.clone()))
        .with_state(state);
    // Pages hit without a session (redirected to the login form) sample nothing.
    for path in ["/console", "/console/groups", "/console/topics"] {
        let answer = call(&app, get(path)).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
    }
    assert!(
        !console.lag.sampling(),
        "a cookieless hit started the sampler"
    );
    // A logged-in page does.
    let cookie = login(&app, "admin").await;
    let answer = call(&app, with_cookie(get("/console"), &cookie)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(console.lag.sampling());
}

#[tokio::test]
async fn the_login_limiter_answers_before_the_body_is_read_and_the_form_is_small() {
    use crate::http::auth::throttle::MAX_AUTH_FAILURES;
    use crate::testing::bearer;
    use axum::extract::ConnectInfo;

    let app = router(state_with_keys("admin-key-0123456789:read=*"));
    let from = |address: &str, mut request: Request<Body>| {
        let peer: std::net::SocketAddr = address.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    };
    // A login form over 4 KiB is refused without its key being looked at.
    let (cookie, token) = login_form(&app).await;
    let big = "x".repeat(64 << 10);
    let post = form(
        "/console/login",
        Some(&cookie),
        &[("_csrf", &token), ("key", &big)],
    );
    let answer = call(&app, from("192.0.2.9:1", post)).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );
    // An address over the failure limit (wrong Bearer keys count as well) is answered 429
    // before its body arrives; this one never does.
    for _ in 0..MAX_AUTH_FAILURES {
        let guess = from("192.0.2.10:1", bearer(get("/topics"), "wrong-guess"));
        assert_eq!(call(&app, guess).await.status, StatusCode::UNAUTHORIZED);
    }
    let endless = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let post = Request::post("/console/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from_stream(endless))
        .unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        call(&app, from("192.0.2.10:2", post)),
    )
    .await
    .expect("the limiter waited for the body");
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn creating_a_topic_needs_a_create_grant_and_is_bounded() {
    let prefix = testkit::unique("made");
    let keys = format!("writer:write=*,read=*;maker:read=*,create={prefix}-*");
    let app = router(state_with_keys(&keys));
    let create = |cookie: String, token: String, name: String, partitions: &str| {
        let fields = [
            ("_csrf", token),
            ("name", name),
            ("partitions", partitions.to_owned()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        form("/console/topics", Some(&cookie), &fields)
    };
    // A key that may write every topic but create none sees no form, and is refused.
    let writer = login(&app, "writer").await;
    let page = call(&app, with_cookie(get("/console/topics"), &writer)).await;
    assert!(!page.text.contains("Create a topic"));
    let token = csrf(&page);
    let name = format!("{prefix}-w");
    let answer = call(&app, create(writer, token, name.clone(), "1")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    // A key with a create grant creates what it names, within the partition bound.
    let maker = login(&app, "maker").await;
    let page = call(&app, with_cookie(get("/console/topics"), &maker)).await;
    assert!(page.text.contains("Create a topic"));
    let token = csrf(&page);
    let too_many = call(
        &app,
        create(maker.clone(), token.clone(), format!("{prefix}-x"), "101"),
    )
    .await;
    assert_eq!(
        too_many.status,
        StatusCode::BAD_REQUEST,
        "{}",
        too_many.text
    );
    let other = call(
        &app,
        create(maker.clone(), token.clone(), testkit::unique("other"), "1"),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    let made = call(&app, create(maker, token, format!("{prefix}-1"), "2")).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.text);
    let admin = testkit::kafka().admin().unwrap();
    let created = admin.describe_topic(&format!("{prefix}-1")).await.unwrap();
    assert_eq!(created.partitions.len(), 2);
    assert!(
        admin.describe_topic(&name).await.is_err(),
        "the writer created nothing"
    );
}
