//! Ingest of the generated benchmark corpus through the real component (issue 12, item 4): the
//! guest's MIME decoders now take SIMD fast paths (wasm simd128, vendor/mail-parser), so the
//! component must parse exactly as the native build of the same parser (which
//! plugin/tests/parse_compare.rs holds to the published mail-parser), and a fetch with the
//! SQLite store must keep every attachment's name, type and size and every text body.

use mailplug_host::config::{AfterFetch, FirstSync, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::engine::ParsedMessage;
use mailplug_host::ops;
use mailplug_tests::{corpus, plugin, rig, tenant, test_box, ServerSpec};
use mailplug_tests::TempPath;

/// Every field the contract promises, in one comparable form.
fn wasm_form(p: &ParsedMessage) -> String {
    let addrs = |v: &[mailplug_host::engine::Address]| -> Vec<(Option<String>, String)> {
        v.iter().map(|a| (a.name.clone(), a.address.clone())).collect()
    };
    let atts: Vec<_> =
        p.attachments.iter().map(|a| (a.name.clone(), a.media_type.clone(), a.size, a.content_id.clone(), a.bytes.clone())).collect();
    format!(
        "{:?}",
        (
            (&p.message_id, p.message_id_synthetic, &p.in_reply_to, &p.references),
            (addrs(&p.from), addrs(&p.reply_to), addrs(&p.to), addrs(&p.cc)),
            (&p.subject, p.date_ms, &p.text_body, &p.html_body),
            atts,
            format!("{:?}", p.classification).to_lowercase().rsplit(':').next().unwrap_or_default().to_string(),
            &p.warnings,
        )
    )
}

fn native_form(p: &mailplug_plugin::parse::ParsedMessage) -> String {
    let addrs = |v: &[mailplug_plugin::parse::Address]| -> Vec<(Option<String>, String)> {
        v.iter().map(|a| (a.name.clone(), a.address.clone())).collect()
    };
    let atts: Vec<_> =
        p.attachments.iter().map(|a| (a.name.clone(), a.media_type.clone(), a.size, a.content_id.clone(), a.bytes.clone())).collect();
    format!(
        "{:?}",
        (
            (&p.message_id, p.message_id_synthetic, &p.in_reply_to, &p.references),
            (addrs(&p.from), addrs(&p.reply_to), addrs(&p.to), addrs(&p.cc)),
            (&p.subject, p.date_ms, &p.text_body, &p.html_body),
            atts,
            format!("{:?}", p.classification).to_lowercase().rsplit(':').next().unwrap_or_default().to_string(),
            &p.warnings,
        )
    )
}

/// Panics, naming the message and the first difference, unless both parses are the same.
fn same_form(what: &str, wasm: &ParsedMessage, native: &mailplug_plugin::parse::ParsedMessage) {
    let (w, n) = (wasm_form(wasm), native_form(native));
    if w != n {
        let at = w.bytes().zip(n.bytes()).position(|(a, b)| a != b).unwrap_or(w.len().min(n.len()));
        let around = |s: &str| s.get(at.saturating_sub(100)..(at + 100).min(s.len())).unwrap_or_default().to_string();
        panic!("{what}: the component parses differently at {at}:\nwasm:   {}\nnative: {}", around(&w), around(&n));
    }
}

#[tokio::test]
async fn component_parses_the_corpus_like_the_native_parser() {
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let mut with_attachments = 0;
    for i in 0..150 {
        let (raw, expected) = corpus::message(21, i);
        let wasm = instance.parse_message(&raw).await.expect("parser runs").expect("parses");
        let native = mailplug_plugin::parse::parse_message(&raw).expect("parses natively");
        same_form(&format!("message {i}"), &wasm, &native);
        assert_eq!(wasm.message_id, expected.message_id);
        let got: Vec<_> = wasm.attachments.iter().map(|a| (a.name.clone().unwrap_or_default(), a.media_type.clone(), a.size)).collect();
        assert_eq!(got, expected.attachments, "message {i}");
        assert!(wasm.text_body.as_deref().is_some_and(|t| t.len() > 100), "message {i} has its text body");
        with_attachments += usize::from(!expected.attachments.is_empty());
    }
    assert!(with_attachments > 30, "{with_attachments} of 150 messages with attachments");
}

/// The component's quoted-printable and single-byte-charset scans are wasm SIMD, the native
/// build's are not: both must decode every kind of stop at every offset of a 16-byte step
/// alike, and batches of base64 lines with an odd line anywhere.
#[tokio::test]
async fn component_decodes_text_and_base64_edge_cases_like_the_native_parser() {
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let mut messages = corpus::quoted_printable_stops();
    assert!(messages.len() > 3000, "{} messages", messages.len());
    messages.extend(corpus::single_byte_runs());
    messages.extend(corpus::base64_batches());
    let total = messages.len();
    let mut with_text = 0;
    for raw in messages {
        let what = String::from_utf8_lossy(&raw);
        let wasm = instance.parse_message(&raw).await.expect("parser runs").expect("parses");
        // The native parser is built without overflow checks, as the component is (Cargo.toml),
        // so every message is compared.
        let native = mailplug_plugin::parse::parse_message(&raw).unwrap_or_else(|e| panic!("{what}: native: {e}"));
        same_form(&what, &wasm, &native);
        with_text += usize::from(wasm.text_body.as_deref().is_some_and(|t| !t.is_empty()));
    }
    // Without a closing boundary some parts are not text bodies; most are.
    assert!(with_text > total / 2, "{with_text} of {total} with a text body");
}

fn config(user: &str, pass: &str) -> TenantConfig {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, user, pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.mailboxes[0].after_fetch = AfterFetch::Keep;
    cfg.mailboxes[0].first_sync = FirstSync::All;
    cfg
}

#[tokio::test]
async fn corpus_mailbox_is_stored_with_attachments_and_text_bodies() {
    let r = rig();
    let (user, pass) = test_box(37);
    r.reset_mailbox(&user);
    let n = 40;
    let mut expected = Vec::new();
    for i in 0..n {
        let (raw, e) = corpus::message(22, i);
        r.put(&user, "INBOX", &raw);
        expected.push(e);
    }
    let path = TempPath::file("ingest", "mailplug.sqlite3");
    let db = Database::open(&path).expect("db");
    let cfg = config(&user, &pass);
    let mut sink = db.sink(&cfg.tenant, "inbox");
    let summary = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &db).await.expect("fetch");
    drop(sink);
    assert_eq!(summary.delivered as usize, n);

    let conn = rusqlite::Connection::open(&path).expect("open db");
    for e in &expected {
        let (id, error): (i64, Option<String>) = conn
            .query_row("SELECT id, parse_error FROM messages WHERE message_id = ?1", [&e.message_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap_or_else(|err| panic!("{} not stored: {err}", e.message_id));
        assert_eq!(error, None, "{}", e.message_id);
        // The bodies are kept beside the raw bytes in the segment (schema 4), read back checked.
        let detail = db.message_detail(&cfg.tenant, id).expect("detail").expect("stored");
        assert!(detail.text_body.is_some_and(|t| t.len() > 100), "{} has its text body", e.message_id);
        let mut stmt = conn.prepare("SELECT name, media_type, size FROM attachments WHERE message = ?1 ORDER BY rowid").expect("query");
        let stored: Vec<(String, String, u64)> = stmt
            .query_map([id], |row| {
                Ok((row.get::<_, Option<String>>(0)?.unwrap_or_default(), row.get(1)?, row.get::<_, i64>(2)? as u64))
            })
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(stored, e.attachments, "{}", e.message_id);
    }
    let _ = std::fs::remove_file(&path);
}
