//! The admin page of `mailplug serve` (issue 15) in a real browser: Debian's headless Chromium
//! driven over WebDriver (tests/src/browser.rs), against the real `mailplug serve` binary and
//! the rig. Rig boxes 99 and 100 and the rig's OAuth2 server are this file's.

use std::path::PathBuf;

use mailplug_tests::browser::Browser;
use mailplug_tests::serve::{workdir, Serve};

/// A test's work folder in /tmp: removed when the test passes, kept (with the failure's
/// screenshot and page) when it fails.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the test's work folder is kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The test's work folder and a running serve (started off the async threads).
async fn serve(name: &str) -> (Workdir, Serve) {
    let dir = workdir(&format!("admin-{name}"));
    let d = dir.clone();
    let s = tokio::task::spawn_blocking(move || Serve::start(&d, "serve.log")).await.expect("serve starts");
    (Workdir(dir), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reads_a_page_that_serve_answers() {
    let (dir, s) = serve("rig").await;
    let b = Browser::start(&dir.0).await;
    b.guard("healthz", async {
        b.goto(&format!("http://{}/healthz", s.addr)).await;
        let body = b.text_contains("body", "status").await;
        let v: serde_json::Value = serde_json::from_str(body.trim()).expect("the page is the API's JSON");
        assert_eq!(v["status"], "ok");
    })
    .await;
    b.close().await;
}
