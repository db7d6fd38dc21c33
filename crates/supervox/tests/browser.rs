//! The softphone in a real browser: Debian's chromium driven through
//! chromedriver (WebDriver, fantoccini), two nodes on loopback, two browser
//! sessions. Needs `chromium` and `chromium-driver` (scripts/setup installs
//! them); without them the test fails, it does not skip.

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long any one thing may take to show on a page.
const SHOW: Duration = Duration::from_secs(20);

/// Where the screenshots go (kept after the run).
fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// chromedriver on a free loopback port.
fn chromedriver(root: &Path) -> (Proc, String) {
    for bin in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the browser tests need Debian's chromium and chromium-driver (scripts/setup)"
        );
    }
    let addr = free_addr();
    let log = std::fs::File::create(root.join("chromedriver.log")).unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={}", addr.port()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc { child, name: "chromedriver".into() }, format!("http://{addr}"))
}

/// A headless browser session with its own profile.
async fn browser(driver: &str, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-quic", "--window-size=1280,900",
            format!("--user-data-dir={}", profile.display())]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(driver).await.expect("a chromium session")
}

/// A login link from the node (`supervox ui --print`).
fn login_url(node: &Node) -> String {
    let out = Command::new(BIN).args(["ui", "--print", "--control"]).arg(&node.control).output().unwrap();
    assert!(out.status.success(), "supervox ui: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Wait for an element matching `css` on the page.
async fn shown(c: &Client, who: &str, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(SHOW)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{who}: no {css} within {SHOW:?}: {e}"))
}

/// Wait until the text of `css` satisfies `f`.
async fn text_until(c: &Client, who: &str, css: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SHOW;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if f(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{who}: {css} still reads {last:?} after {SHOW:?}")
}

/// Wait until attribute `attr` of `css` satisfies `f`.
async fn attr_until(c: &Client, who: &str, css: &str, attr: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SHOW;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(Some(v)) = e.attr(attr).await {
                if f(&v) {
                    return v;
                }
                last = Some(v);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{who}: {css} [{attr}] is {last:?} after {SHOW:?}")
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.len() > 1000, "an empty screenshot");
    std::fs::write(shots().join(name), png).unwrap();
}

/// The page fits the window: nothing wider than the viewport.
async fn fits(c: &Client, who: &str) {
    let v =
        c.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.expect("script");
    let (scroll, inner) = (v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0));
    assert!(scroll <= inner + 1.0, "{who}: the page is {scroll} px wide in a {inner} px window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_add_each_other_call_and_chat_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (_driver, driver) = chromedriver(dir.path());
    let sn = start_sn(dir.path(), "sn", &[]);
    let alice = start_node(dir.path(), "alice", &[sn.addr], &["--input", "tone:440"]);
    let bob = start_node(dir.path(), "bob", &[sn.addr], &["--input", "tone:660"]);
    for n in [&alice, &bob] {
        wait_signed_in(n, Duration::from_secs(15));
    }
    let (a, b) =
        (browser(&driver, &dir.path().join("profile-a")).await, browser(&driver, &dir.path().join("profile-b")).await);
    a.goto(&login_url(&alice)).await.unwrap();
    b.goto(&login_url(&bob)).await.unwrap();
    for (c, who) in [(&a, "alice"), (&b, "bob")] {
        text_until(c, who, "#stream-state", |t| t.contains("live")).await;
        text_until(c, who, "#me-name", |t| t == who).await;
        text_until(c, who, "#me-supernode", |t| t.contains(&sn.addr.to_string())).await;
        text_until(c, who, "#reachability", |t| !t.is_empty()).await;
    }

    // Alice adds bob; bob accepts; both see each other online.
    shown(&a, "alice", "#add-contact-name").await.send_keys("bob").await.unwrap();
    shown(&a, "alice", "#add-contact-message").await.send_keys("it's alice").await.unwrap();
    shown(&a, "alice", "#add-contact-button").await.click().await.unwrap();
    shown(&b, "bob", r#"li.contact[data-name="alice"][data-state="incoming"] .accept-button"#)
        .await
        .click()
        .await
        .unwrap();
    shown(&a, "alice", r#"li.contact[data-name="bob"][data-state="accepted"][data-presence="online"]"#).await;
    shown(&b, "bob", r#"li.contact[data-name="alice"][data-state="accepted"][data-presence="online"]"#).await;

    // Alice calls; bob's page rings; bob answers; both are on direct-udp and the charts fill.
    shown(&a, "alice", r#"li.contact[data-name="bob"] .call-button"#).await.click().await.unwrap();
    text_until(&b, "bob", "#call-state", |t| t.contains("incoming")).await;
    text_until(&b, "bob", "#call-peer", |t| t.contains("alice")).await;
    shown(&b, "bob", "#answer-button").await.click().await.unwrap();
    for (c, who) in [(&a, "alice"), (&b, "bob")] {
        text_until(c, who, "#call-state", |t| t.contains("connected")).await;
        attr_until(c, who, "#call-path", "data-path", |p| p == "direct-udp").await;
        text_until(c, who, "#call-path", |t| t.contains("direct-udp")).await;
        attr_until(c, who, "#call-chart", "data-points", |n| n.parse::<u32>().is_ok_and(|n| n >= 3)).await;
        text_until(c, who, "#call-figures", |t| t.contains("MOS")).await;
    }
    screenshot(&a, "alice-call-desktop.png").await;

    // Alice writes; bob sees it (unread first), opens the chat; alice sees it read.
    shown(&a, "alice", r#"li.contact[data-name="bob"] .contact-name"#).await.click().await.unwrap();
    let text = "hello from the browser";
    shown(&a, "alice", "#chat-input").await.send_keys(text).await.unwrap();
    shown(&a, "alice", "#chat-send").await.click().await.unwrap();
    text_until(&b, "bob", r#"li.contact[data-name="alice"] .unread"#, |t| t.trim() == "1").await;
    shown(&b, "bob", r#"li.contact[data-name="alice"] .contact-name"#).await.click().await.unwrap();
    text_until(&b, "bob", r#"#chat-messages li.message[data-direction="in"] .text"#, |t| t.contains(text)).await;
    shown(&a, "alice", r#"#chat-messages li.message[data-direction="out"][data-status="read"]"#).await;
    screenshot(&b, "bob-chat-desktop.png").await;
    screenshot(&a, "alice-call-chat-desktop.png").await;

    // A 375 px phone window: everything fits, the call is still shown.
    b.set_window_size(375, 800).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fits(&b, "bob (375 px)").await;
    text_until(&b, "bob", "#call-path", |t| t.contains("direct-udp")).await;
    screenshot(&b, "bob-call-mobile.png").await;
    fits(&a, "alice (desktop)").await;

    // Alice hangs up; both see it end; the history shows the call.
    shown(&a, "alice", "#hangup-button").await.click().await.unwrap();
    for (c, who) in [(&a, "alice"), (&b, "bob")] {
        text_until(c, who, "#call-state", |t| t.contains("ended")).await;
    }
    shown(&a, "alice", r#"#history li.call-record[data-peer="bob"][data-direction="outgoing"][data-missed="false"]"#)
        .await;
    shown(&b, "bob", r#"#history li.call-record[data-peer="alice"][data-direction="incoming"]"#).await;
    screenshot(&a, "alice-history-desktop.png").await;

    // And the same story from the nodes' side.
    let (_, hist) = ctl_json(&alice, &["history", "--json"]);
    assert_eq!((hist[0]["peer"].as_str(), hist[0]["path"].as_str()), (Some("bob"), Some("direct-udp")), "{hist:?}");
    let (_, msgs) = ctl_json(&bob, &["messages", "alice", "--json"]);
    assert!(msgs.iter().any(|m| m["text"] == text && m["status"] == "read"), "{msgs:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}
