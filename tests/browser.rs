//! The staff_web example in a real browser: headless Chromium driven over
//! WebDriver (fantoccini + Debian's `chromium-driver`), against the
//! example's router served in process.
//!
//! Needs `chromium` and `chromedriver` on `PATH` (or `CHROMIUM` and
//! `CHROMEDRIVER` set to their paths): `.ci/run` installs them. Without
//! them a test is skipped with a message, except under `CI=true`, where it
//! fails. Screenshots go to `target/tmp/screenshots/`.

#[path = "../examples/staff_web/app.rs"]
mod app;
mod web;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Message};
use staff_pubsub::{Connection, PubSub, Retention, Uuid};
use staff_pubsub_tests::redis_server::{free_port, RedisServer};
use staff_pubsub_tests::within;

/// How long a change made elsewhere may take to show on a page.
const LIVE: Duration = Duration::from_secs(2);

const ENGINEERING: &str = "01920000-0000-7000-8000-000000010001";
const OPERATIONS: &str = "01920000-0000-7000-8000-000000010002";
const PLATFORM: &str = "01920000-0000-7000-8000-000000020001";
const GRACE: &str = "01920000-0000-7000-8000-000000000002";

fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver process on a free loopback port, killed on drop with
/// every browser it started: it leads a process group of its own, which
/// the Chromium processes it spawns join, and the whole group is killed
/// (killing chromedriver alone would leave its browsers running).
struct Driver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    profiles: Vec<PathBuf>,
}

impl Driver {
    /// Starts chromedriver, or `None` (the test is skipped) when the browser
    /// is missing outside CI.
    async fn start() -> Option<Self> {
        let driver = find("CHROMEDRIVER", &["chromedriver"]);
        let chromium = find(
            "CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            let message =
                "chromium and chromedriver are needed: apt-get install chromium chromium-driver \
                           (or set CHROMIUM and CHROMEDRIVER)";
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{message}");
            }
            eprintln!("skipped: {message}");
            return None;
        };
        let port = free_port();
        let child = Command::new(&driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let driver = Self {
            child,
            port,
            chromium,
            profiles: Vec::new(),
        };
        within("chromedriver to listen", async {
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Some(driver)
    }

    /// A new headless browser window (its own fresh profile) at `url`.
    async fn window(&mut self, url: &str) -> Client {
        let profile = std::env::temp_dir().join(format!("staff-web-chromium-{}", Uuid::now_v7()));
        self.profiles.push(profile.clone());
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1100,760",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = within(
            "a Chromium session",
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{}", self.port)),
        )
        .await
        .expect("a WebDriver session");
        within("the page", client.goto(url)).await.expect("goto");
        // The page is live once its stream said `ready` and its state loaded.
        wait(&client, "the page to be live", Duration::from_secs(10), |c| {
            js(c, "return document.getElementById('status').textContent === 'live' && document.getElementById('loads').textContent === '1'", vec![])
        })
        .await;
        // A mark that a reload would wipe.
        js(&client, "window.notReloaded = true; return true", vec![]).await;
        client
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for profile in &self.profiles {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// Runs `script` in the page and returns whether it returned `true`.
async fn js(client: &Client, script: &str, args: Vec<Value>) -> bool {
    client
        .execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
        == Value::Bool(true)
}

/// Waits until `check` holds, polling every 25 ms; fails after `limit`.
async fn wait<'a, F, Fut>(client: &'a Client, what: &str, limit: Duration, check: F) -> Duration
where
    F: Fn(&'a Client) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check(client).await {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let name: String = what
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let shot = screenshot(client, &format!("failure-{name}")).await;
            panic!(
                "waited {limit:?} for {what}; the page is in {}",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether the page shows a department named `name` (`present`) or not.
async fn shows_department(client: &Client, name: &str, present: bool) -> bool {
    let found = js(
        client,
        "return [...document.querySelectorAll('.department > h2')].some(h => h.textContent === arguments[0])",
        vec![json!(name)],
    )
    .await;
    found == present
}

async fn shows_team(client: &Client, department: &str, name: &str, present: bool) -> bool {
    let found = js(
        client,
        "return [...document.querySelectorAll(`[data-department='${arguments[0]}'] .team h3`)].some(h => h.textContent === arguments[1])",
        vec![json!(department), json!(name)],
    )
    .await;
    found == present
}

async fn shows_member(client: &Client, team: &str, person: &str, present: bool) -> bool {
    let found = js(
        client,
        "return !!document.querySelector(`[data-team='${arguments[0]}'] li[data-person='${arguments[1]}']`)",
        vec![json!(team), json!(person)],
    )
    .await;
    found == present
}

/// The page was not reloaded, and its state was loaded `loads` times.
async fn assert_loads(client: &Client, loads: u32) {
    assert!(
        js(client, "return window.notReloaded === true", vec![]).await,
        "the page was reloaded"
    );
    let text = client
        .find(Locator::Id("loads"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, loads.to_string(), "state loads");
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    if let Ok(png) = client.screenshot().await {
        std::fs::write(&path, png).unwrap();
    }
    path
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let input = client.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Serves the example on `pubsub`, named `node`.
async fn example(pubsub: PubSub<Message>, node: &str) -> (app::App, SocketAddr) {
    let app = app::App::new(pubsub, node).unwrap();
    let bridge = app.bridge();
    let addr = web::serve(app.router(&bridge)).await;
    (app, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_one_window_shows_in_the_other_without_reload() {
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let (_app, addr) = example(PubSub::new(), "one").await;
    let url = format!("http://{addr}/");
    let a = driver.window(&url).await;
    let b = driver.window(&url).await;

    // Create a department in A: B shows it.
    type_into(&a, "#new-department-name", "Research").await;
    click(&a, "#create-department").await;
    let took = wait(&b, "Research in B", LIVE, |c| {
        shows_department(c, "Research", true)
    })
    .await;
    eprintln!("department created in A, shown in B after {took:?}");

    // Rename a department in A: B shows the new name, not the old one.
    type_into(
        &a,
        &format!("[data-department='{OPERATIONS}'] > .edit .rename-input"),
        "Customer Care",
    )
    .await;
    click(
        &a,
        &format!("[data-department='{OPERATIONS}'] > .edit .rename"),
    )
    .await;
    wait(&b, "the renamed department in B", LIVE, |c| async move {
        shows_department(c, "Customer Care", true).await
            && shows_department(c, "Operations", false).await
    })
    .await;

    // A team in A, a person added to it, a team renamed: all in B.
    type_into(&a, "#new-team-name", "Data").await;
    js(
        &a,
        "document.getElementById('new-team-department').value = arguments[0]; return true",
        vec![json!(ENGINEERING)],
    )
    .await;
    click(&a, "#create-team").await;
    wait(&b, "the new team in B", LIVE, |c| {
        shows_team(c, ENGINEERING, "Data", true)
    })
    .await;
    js(
        &a,
        "document.querySelector(`[data-team='${arguments[0]}'] .add-person`).value = arguments[1]; return true",
        vec![json!(PLATFORM), json!(GRACE)],
    )
    .await;
    click(&a, &format!("[data-team='{PLATFORM}'] .add")).await;
    wait(&b, "Grace in Platform in B", LIVE, |c| {
        shows_member(c, PLATFORM, GRACE, true)
    })
    .await;
    type_into(
        &a,
        &format!("[data-team='{PLATFORM}'] .rename-input"),
        "Platform Core",
    )
    .await;
    click(&a, &format!("[data-team='{PLATFORM}'] .rename")).await;
    wait(&b, "the renamed team in B", LIVE, |c| {
        shows_team(c, ENGINEERING, "Platform Core", true)
    })
    .await;
    screenshot(&b, "two_windows").await;

    // Remove the person, delete a team, delete a department in A.
    click(
        &a,
        &format!("[data-team='{PLATFORM}'] li[data-person='{GRACE}'] .remove"),
    )
    .await;
    wait(&b, "Grace gone from Platform in B", LIVE, |c| {
        shows_member(c, PLATFORM, GRACE, false)
    })
    .await;
    click(&a, &format!("[data-team='{PLATFORM}'] .delete")).await;
    wait(&b, "Platform gone in B", LIVE, |c| {
        shows_team(c, ENGINEERING, "Platform Core", false)
    })
    .await;
    click(
        &a,
        &format!("[data-department='{ENGINEERING}'] > .edit .delete"),
    )
    .await;
    wait(&b, "Engineering gone in B", LIVE, |c| {
        shows_department(c, "Engineering", false)
    })
    .await;
    // A's own page hears of it as B's does (not necessarily first).
    wait(&a, "Engineering gone in A", LIVE, |c| {
        shows_department(c, "Engineering", false)
    })
    .await;

    // All of it live: neither window reloaded or refetched.
    assert_loads(&a, 1).await;
    assert_loads(&b, 1).await;
}

/// The names the page shows as viewing, sorted.
async fn viewers(client: &Client) -> Vec<String> {
    let shown = client
        .execute(
            "return [...document.querySelectorAll('#viewers li')].map(li => li.textContent.replace(' (you)', '')).sort()",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}"));
    serde_json::from_value(shown).unwrap_or_default()
}

async fn shows_viewers(client: &Client, names: &[&str]) -> bool {
    viewers(client).await == names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_see_each_other_viewing_and_a_closed_page_leaves() {
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let pubsub = PubSub::new();
    let (_app, addr) = example(pubsub.clone(), "one").await;
    let a = driver.window(&format!("http://{addr}/?name=Ada")).await;
    let b = driver.window(&format!("http://{addr}/?name=Bea")).await;

    // Each page lists both: B from its presence_state, A from a diff.
    for (client, what) in [(&a, "both viewers in A"), (&b, "both viewers in B")] {
        wait(client, what, LIVE, |c| shows_viewers(c, &["Ada", "Bea"])).await;
    }
    assert!(
        js(
            &a,
            "return document.querySelector('#viewers li[title]').title === 'on node one'",
            vec![]
        )
        .await,
        "a viewer's node is shown"
    );
    let tracked = pubsub.presences::<app::Viewer>(staff::topic_departments());
    assert_eq!(tracked.len(), 2, "{tracked:?}");
    screenshot(&a, "viewers").await;

    // B's window closes: its connection ends, and A is sent the leave.
    b.close().await.expect("close B");
    let took = wait(&a, "Bea's leave in A", LIVE, |c| shows_viewers(c, &["Ada"])).await;
    eprintln!("a closed page left A's viewers after {took:?}");
    assert!(pubsub
        .presences::<app::Viewer>(staff::topic_departments())
        .iter()
        .all(|presence| presence.meta.name == "Ada"));
    assert_loads(&a, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_makes_the_page_refetch_its_state() {
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let pubsub = PubSub::new();
    let (app, addr) = example(pubsub.clone(), "one").await;
    let page = driver.window(&format!("http://{addr}/")).await;

    // A change nobody is told about, then a gap: only a refetch shows it.
    app.store()
        .rename_department_silently(Uuid::parse_str(ENGINEERING).unwrap(), "Skunkworks");
    assert!(shows_department(&page, "Engineering", true).await);
    pubsub.local_node().signal_gap();
    wait(&page, "the refetched state", LIVE, |c| {
        shows_department(c, "Skunkworks", true)
    })
    .await;
    assert_loads(&page, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_node_one_shows_on_a_page_of_node_two() {
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let redis = RedisServer::start().await;
    let node = |name: &'static str| {
        let url = redis.url();
        async move {
            let pubsub = staff::builder()
                .node_name(name)
                .redis(RedisConfig::new(url))
                .await
                .unwrap();
            within(
                "a Redis connection",
                pubsub.wait_for_connection(Connection::Connected),
            )
            .await;
            pubsub
        }
    };
    let (_one, one) = example(node("one").await, "one").await;
    let (two_app, two) = example(node("two").await, "two").await;
    let page = driver.window(&format!("http://{two}/")).await;
    assert!(
        js(
            &page,
            "return document.getElementById('node').textContent === 'two'",
            vec![]
        )
        .await
    );

    let reply = web::post(one, "/api/departments", br#"{"name":"Research"}"#).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let took = wait(
        &page,
        "node one's department on node two's page",
        LIVE,
        |c| shows_department(c, "Research", true),
    )
    .await;
    eprintln!("created on node one, shown on node two's page after {took:?}");
    let reply = web::post(
        one,
        "/api/teams/rename",
        format!(r#"{{"uuid":"{PLATFORM}","name":"Platform Core"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    wait(&page, "node one's rename on node two's page", LIVE, |c| {
        shows_team(c, ENGINEERING, "Platform Core", true)
    })
    .await;
    screenshot(&page, "two_nodes").await;
    assert_loads(&page, 1).await;
    // Node two's own store followed the events: a fresh page there has it.
    within("node two's store", async {
        loop {
            let state = two_app.store().view("two");
            if state["departments"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "Research"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Cuts the page's event streams from the server side, and holds the
/// browser's reconnections until told: the part of an outage a test
/// controls. Records the `Last-Event-ID` of every `/events` request.
#[derive(Clone, Default)]
struct Outage {
    /// Bumped to end every open stream.
    cuts: Arc<tokio::sync::watch::Sender<u64>>,
    /// While true, `/events` requests wait.
    down: Arc<tokio::sync::watch::Sender<bool>>,
    /// The `Last-Event-ID` of each `/events` request, in order.
    ids: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

impl Outage {
    /// Ends every stream and holds new ones.
    fn start(&self) {
        self.down.send_replace(true);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn end(&self) {
        self.down.send_replace(false);
    }

    fn requests(&self) -> Vec<Option<String>> {
        self.ids.lock().unwrap().clone()
    }

    /// The middleware: `/events` responses end at the next cut.
    async fn layer(
        self,
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        use futures_util::StreamExt;
        if request.uri().path() != "/events" {
            return next.run(request).await;
        }
        let id = request
            .headers()
            .get("last-event-id")
            .map(|id| id.to_str().unwrap().to_owned());
        self.ids.lock().unwrap().push(id);
        let mut down = self.down.subscribe();
        let _ = down.wait_for(|down| !down).await;
        let mut cuts = self.cuts.subscribe();
        cuts.mark_unchanged();
        let response = next.run(request).await;
        let (parts, body) = response.into_parts();
        let body = body
            .into_data_stream()
            .take_until(async move { cuts.changed().await.ok() });
        axum::response::Response::from_parts(parts, axum::body::Body::from_stream(body))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_stream_dropped_is_replayed_what_it_missed_without_refetching() {
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let redis = RedisServer::start().await;
    let pubsub = staff::builder()
        .node_name("one")
        .redis(RedisConfig::new(redis.url()).durable(Retention::entries(10_000)))
        .await
        .unwrap();
    within(
        "a Redis connection",
        pubsub.wait_for_connection(Connection::Connected),
    )
    .await;
    let app = app::App::new(pubsub, "one").unwrap();
    let bridge = app.bridge();
    let outage = Outage::default();
    let router = app.router(&bridge).layer(axum::middleware::from_fn({
        let outage = outage.clone();
        move |request, next| outage.clone().layer(request, next)
    }));
    let addr = web::serve(router).await;
    let page = driver.window(&format!("http://{addr}/")).await;

    // A change the page sees: its last event id is now a log position.
    let reply = web::post(addr, "/api/departments", br#"{"name":"Before"}"#).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    wait(&page, "Before on the page", LIVE, |c| {
        shows_department(c, "Before", true)
    })
    .await;

    // The server ends the page's stream and holds its reconnection.
    outage.start();
    wait(&page, "the page to see the drop", LIVE, |c| {
        js(
            c,
            "return document.getElementById('status').textContent === 'reconnecting'",
            vec![],
        )
    })
    .await;
    // Meanwhile, changes.
    let changes: [(&str, String); 4] = [
        ("/api/departments", r#"{"name":"Research"}"#.to_owned()),
        (
            "/api/teams/rename",
            format!(r#"{{"uuid":"{PLATFORM}","name":"Platform Core"}}"#),
        ),
        (
            "/api/members",
            format!(r#"{{"team_uuid":"{PLATFORM}","person_uuid":"{GRACE}"}}"#),
        ),
        (
            "/api/departments/rename",
            format!(r#"{{"uuid":"{OPERATIONS}","name":"Customer Care"}}"#),
        ),
    ];
    for (path, body) in &changes {
        let reply = web::post(addr, path, body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }
    // EventSource reconnects by itself (after its retry delay, 3 s in
    // Chromium) with the id of the last event it got.
    within("the browser's reconnection", async {
        while outage.requests().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        shows_department(&page, "Research", false).await,
        "nothing reached the page during the outage"
    );
    outage.end();

    let requests = outage.requests();
    assert_eq!(requests[0], None, "the first connection is new");
    let resumed_from = requests[1].clone().expect("a Last-Event-ID");
    resumed_from
        .parse::<staff_pubsub::Position>()
        .unwrap_or_else(|e| panic!("{resumed_from:?}: {e}"));
    let took = wait(
        &page,
        "every change made during the outage",
        LIVE,
        |c| async move {
            shows_department(c, "Research", true).await
                && shows_department(c, "Customer Care", true).await
                && shows_team(c, ENGINEERING, "Platform Core", true).await
                && shows_member(c, PLATFORM, GRACE, true).await
        },
    )
    .await;
    eprintln!("resumed after {resumed_from}: the page caught up {took:?} after the reconnection");
    screenshot(&page, "resumed").await;
    // Replayed, not refetched: one state load (a resync would load it
    // again), no reload, one resumed stream.
    assert_loads(&page, 1).await;
    let resumes = page
        .find(Locator::Id("resumes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(resumes, "1");
    // And live again.
    let reply = web::post(addr, "/api/departments", br#"{"name":"After"}"#).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    wait(&page, "After on the page", LIVE, |c| {
        shows_department(c, "After", true)
    })
    .await;
    assert_eq!(outage.requests().len(), 2);
}
