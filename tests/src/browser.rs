//! A real browser for the admin page's tests (tests/e2e/admin_browser.rs): Debian's headless
//! Chromium driven over WebDriver by `chromedriver`, through the `fantoccini` crate.
//!
//! `Browser::start` runs /usr/bin/chromedriver on a free port (`--port=0`, the port read from
//! its first line) in a process group of its own, opens a session of headless Chromium with a
//! fresh profile folder, and on drop ends the session's processes (the whole group) and removes
//! the profile. Every wait is bounded and waits for a condition (an element, a text, a value),
//! never for a fixed time. `guard` runs a test's steps and, when one fails, saves a screenshot
//! and the page's HTML into the test's work folder before the panic goes on.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a wait for an element or a condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session and its chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
    /// Where failure screenshots and page sources go (the test's work folder).
    pub workdir: PathBuf,
}

/// The flags the machine's notes give for Chromium as root on a closed network: no sandbox (root),
/// no GPU, no background connections (they are refused here, many at a time).
/// Also Chromium's network log (`chromium-net.log` in the work folder, kept when a test fails):
/// when a page waits on a request, it shows whether the request went to the server or the cache,
/// and where the time went. It holds no cookies or bodies (its default capture mode).
fn chromium_args(profile: &Path, workdir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        "--lang=en-US",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push(format!("--log-net-log={}", workdir.join("chromium-net.log").display()));
    args
}

impl Browser {
    /// Starts chromedriver and a Chromium session. Panics (with what to install) when Chromium
    /// or chromedriver is missing: tests/setup.sh installs them.
    pub async fn start(workdir: &Path) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(bin).exists(), "{bin} is missing: install Debian's chromium and chromium-driver (tests/setup.sh does)");
        }
        let profile = workdir.join(format!("chromium-profile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile folder");
        let log = std::fs::File::create(workdir.join("chromedriver.log")).expect("chromedriver log");
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, so that drop ends chromedriver and every browser process
            // it started, whatever state the session is in.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.trim().strip_prefix("ChromeDriver was started successfully on port ") {
                    let _ = tx.send(rest.trim_end_matches('.').parse::<u16>().ok());
                    break;
                }
                line.clear();
            }
            // Keep reading, so chromedriver never blocks on a full pipe.
            let mut sink = String::new();
            while r.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("join")
            .ok()
            .flatten();
        let Some(port) = port else {
            kill_group(&mut driver);
            panic!("chromedriver did not say its port within 30 s (see chromedriver.log)");
        };
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": chromium_args(&profile, workdir),
                "prefs": {"intl.accept_languages": "en-US"},
            },
        }))
        .expect("capabilities");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}")),
        )
        .await;
        let client = match session {
            Ok(Ok(c)) => c,
            other => {
                kill_group(&mut driver);
                panic!("no Chromium session within 60 s: {:?}", other.map(|r| r.err()));
            }
        };
        Browser { client, driver, profile, workdir: workdir.to_path_buf() }
    }

    /// Runs a test's steps; when one panics, saves `failure-{name}.png` and `failure-{name}.html`
    /// into the work folder, then lets the panic go on.
    pub async fn guard<F: Future<Output = ()>>(&self, name: &str, steps: F) {
        if let Err(panic) = std::panic::AssertUnwindSafe(steps).catch_unwind().await {
            if let Ok(png) = self.client.screenshot().await {
                let _ = std::fs::write(self.workdir.join(format!("failure-{name}.png")), png);
            }
            if let Ok(html) = self.client.source().await {
                let _ = std::fs::write(self.workdir.join(format!("failure-{name}.html")), html);
            }
            eprintln!("the browser's screenshot and page: {}/failure-{name}.{{png,html}}", self.workdir.display());
            std::panic::resume_unwind(panic);
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element matching a CSS selector, waiting for it at most `WAIT`.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within {} s: {e}", WAIT.as_secs()))
    }

    /// Every element matching a CSS selector now (maybe none).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_default()
    }

    /// Whether an element matching `css` exists now.
    pub async fn exists(&self, css: &str) -> bool {
        !self.all(css).await.is_empty()
    }

    /// Polls `cond` every 100 ms until it gives a value, at most `WAIT`; panics naming `what`.
    pub async fn until<T, Fut: Future<Output = Option<T>>>(&self, what: &str, mut cond: impl FnMut() -> Fut) -> T {
        self.until_for(what, WAIT, &mut cond).await
    }

    /// `until` with its own bound.
    pub async fn until_for<T, Fut: Future<Output = Option<T>>>(&self, what: &str, bound: Duration, mut cond: impl FnMut() -> Fut) -> T {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(v) = cond().await {
                return v;
            }
            assert!(Instant::now() < deadline, "gave up after {} s waiting for: {what}", bound.as_secs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the element matching `css` (waiting for the element).
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Waits until the element's visible text contains `needle`; returns the text.
    pub async fn text_contains(&self, css: &str, needle: &str) -> String {
        self.until(&format!("{css} to contain {needle:?}"), || async {
            let t = self.client.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
            t.contains(needle).then_some(t)
        })
        .await
    }

    /// The current value (the DOM property) of a form field.
    pub async fn value(&self, css: &str) -> String {
        self.find(css).await.prop("value").await.ok().flatten().unwrap_or_default()
    }

    /// Waits until the form field's value is `want`.
    pub async fn value_is(&self, css: &str, want: &str) {
        self.until(&format!("{css} to have the value {want:?}"), || async {
            let v = self.client.find(Locator::Css(css)).await.ok()?.prop("value").await.ok()??;
            (v == want).then_some(())
        })
        .await
    }

    /// Waits until the element is shown (`true`) or hidden or gone (`false`).
    pub async fn displayed_is(&self, css: &str, want: bool) {
        self.until(&format!("{css} to be {}", if want { "shown" } else { "hidden" }), || async {
            let shown = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.is_displayed().await.ok()?,
                Err(_) => false,
            };
            (shown == want).then_some(())
        })
        .await
    }

    /// Runs a script in the page and returns what it returned.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// A PNG of the whole page, 1024 pixels wide (as tall as the page, at most 3000), for docs/.
    pub async fn save_page_png(&self, path: &Path) {
        let _ = self.js("window.scrollTo(0, 0); return 0").await;
        // The window grows until its viewport holds the whole page (a few rounds: the layout
        // changes with the width of a scroll bar).
        for _ in 0..4 {
            let v = self.js("return [Math.ceil(document.documentElement.scrollHeight), window.innerHeight, window.outerHeight]").await;
            let n = |i: usize| v[i].as_u64().unwrap_or(768);
            let (page, inner, outer) = (n(0), n(1), n(2));
            if inner >= page.min(3000) {
                break;
            }
            let _ = self.client.set_window_size(1024, (page.min(3000) + outer.saturating_sub(inner)) as u32).await;
        }
        let png = self.client.screenshot().await.expect("screenshot");
        let _ = self.client.set_window_size(1024, 768).await;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the WebDriver session (Chromium quits), then the processes.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group this test started (chromedriver leads it).
    unsafe {
        crate::serve::libc_kill(-(child.id() as i32), 9);
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
