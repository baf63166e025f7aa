//! Helper E (issue 15): the admin page's e2e setup, shared by tests/e2e/admin_http.rs: two
//! tenants (acme on rig box 97 with an admin page password and an evil-named mailbox, bravo on
//! box 98) in a `mailplug serve` of their own, and checks of rendered pages.

use std::path::Path;

use super::*;
use crate::{rig, test_box};

pub const TOKEN_A: &str = "acme-api-token-0123456789abcdef";
pub const PASSWORD_A: &str = "acme-admin-password-0123456789";
pub const TOKEN_B: &str = "bravo-api-token-0123456789abcdef";
/// A mailbox name that would run script if a page did not escape it.
pub const EVIL: &str = "x<script>alert(1)</script>\"'&";

/// A tenant file: one IMAP mailbox on a rig box (and an evil-named second one for acme), a
/// queue, the API token and (acme) the admin page password in files of their own.
pub fn tenant_toml(dir: &Path, id: &str, n: u32, token: &str, password: Option<&str>) -> String {
    let r = rig();
    let tok = dir.join(format!("secrets/{id}.token"));
    private(&tok, token);
    let mut t = format!(
        "# {id}'s tenant file (a comment the admin page keeps)\ntenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{}\"\napi_token_file = \"{}\"\n",
        r.get("RIG_CA"),
        tok.display()
    );
    if let Some(pw) = password {
        let p = dir.join(format!("secrets/{id}.admin"));
        private(&p, pw);
        t += &format!("admin_password_file = \"{}\"\n", p.display());
    }
    t += "[limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n";
    let (user, pass) = test_box(n);
    let pw = dir.join(format!("secrets/box{n}.pw"));
    private(&pw, &pass);
    let names: Vec<&str> = if id == "acme" { vec!["in", EVIL] } else { vec!["in"] };
    for name in names {
        t += &format!(
            "[[mailbox]]\nname = \"{}\"\naddress = \"{user}\"\nprotocol = \"imap\"\npoll_interval_secs = 30\n\
             host = \"localhost\"\nport = {}\ntls = true\nusername = \"{user}\"\npassword_file = \"{}\"\n",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            r.port("RIG_IMAPS_PORT"),
            pw.display()
        );
    }
    t += &format!(
        "[[queue]]\nname = \"q\"\nmailboxes = [\"in\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {}\ntls = true\n\
         username = \"{user}\"\npassword_file = \"{}\"\n",
        r.port("RIG_SMTPS_PORT"),
        pw.display()
    );
    t
}

pub struct Setup {
    pub dir: crate::TempPath,
    pub serve: Serve,
}

/// The service stops and the test's folder goes, also when the test fails.
impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.serve.child.kill();
        let _ = self.serve.child.wait();
    }
}

pub fn start(name: &str) -> Setup {
    let dir = workdir(&format!("admin-{name}"));
    write_tenant(&dir, "acme.toml", &tenant_toml(&dir, "acme", 97, TOKEN_A, Some(PASSWORD_A)));
    write_tenant(&dir, "bravo.toml", &tenant_toml(&dir, "bravo", 98, TOKEN_B, None));
    let serve = Serve::start(&dir, "serve.log");
    let s = Setup { dir, serve };
    loaded(&s, &["acme", "bravo"]);
    s
}

/// Waits until the service runs `tenants`; else fails with what it says and its log.
pub fn loaded(s: &Setup, tenants: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !tenants.iter().all(|t| s.serve.get(&format!("/v1/tenants/{t}"), Some(ADMIN)).0 == 200) {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(s.dir.join("serve.log")).unwrap_or_default();
            panic!("{tenants:?} not loaded within 90 s: {:?}\nlog:\n{log}", s.serve.get("/v1/tenants", Some(ADMIN)));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn csrf_of(page: &HttpAnswer) -> String {
    Browser::field(&page.body, "csrf").unwrap_or_else(|| panic!("no csrf field in {}", page.body))
}

/// No inline script (a <script> without src, an on...= handler, javascript: URL) and no inline
/// style (<style>, style=) in a page; scripts and style sheets only in the head (a style sheet
/// in the body stops the browser's parser there until it has loaded).
pub fn assert_no_inline(what: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    if let Some(body) = lower.find("<body") {
        assert!(!lower[body..].contains("<link") && !lower[body..].contains("<script"), "{what}: a script or style sheet in the body");
    }
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(tag.contains(" src=\""), "{what}: inline script {tag}");
        assert!(lower[i..].starts_with(&format!("{tag}></script>")), "{what}: a script with content");
    }
    assert!(!lower.contains("<style"), "{what}: a <style> element");
    assert!(!lower.contains(" style="), "{what}: a style attribute");
    assert!(!lower.contains("javascript:"), "{what}: a javascript: URL");
    for ev in [" onclick=", " onload=", " onerror=", " onchange=", " onsubmit=", " oninput="] {
        assert!(!lower.contains(ev), "{what}: an inline handler {ev}");
    }
}

/// The text of an HTML page with askama's (and the named) entities turned back into characters.
pub fn unescape(html: &str) -> String {
    html.replace("&#60;", "<").replace("&#62;", ">").replace("&#34;", "\"").replace("&#39;", "'").replace("&quot;", "\"")
        .replace("&lt;", "<").replace("&gt;", ">").replace("&#38;", "&").replace("&amp;", "&")
}

/// The row of a mailbox in the overview.
pub fn row<'a>(html: &'a str, mailbox: &str) -> &'a str {
    let start = html.find(&format!("<tr data-mailbox=\"{mailbox}\"")).unwrap_or_else(|| panic!("no row for {mailbox} in {html}"));
    let len = html[start..].find("</tr>").expect("the row's end");
    &html[start..start + len]
}
