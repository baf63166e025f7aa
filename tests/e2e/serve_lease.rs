//! Several `mailplug serve` nodes on one PostgreSQL store share the tenants through leases
//! (docs/SCALING.md): the real binary, two nodes on the rig's PostgreSQL 15, each test in a
//! schema of its own (`pg_schema`, so the nodes of other tests do not count as live nodes),
//! short lease TTLs (3 s), rig boxes 85 to 92. Observed through the nodes' HTTP APIs and
//! metrics, their logs, the lease table (psql) and the rig's mailboxes. Without the rig's
//! PostgreSQL every test here says so and passes without checking anything. Every wait is
//! bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailplug_tests::pg::{drop_schema, pg_schema, unique};
use mailplug_tests::serve::*;
use mailplug_tests::{rig, sample_message, test_box};
use serde_json::Value;

/// The tests here share rig boxes 85 to 92: one at a time.
static BOXES: Mutex<()> = Mutex::new(());

const TTL: u64 = 3;

/// The tenant's mailboxes: m85 .. m92 on rig boxes 85 .. 92.
fn mailboxes() -> Vec<(String, u32)> {
    (85..=92).map(|n| (format!("m{n}"), n)).collect()
}

/// `sql` through psql as the test role (in the test's schema); the rows as text.
fn psql(url: &str, pw: &Path, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-F", "|", url, "-c", sql])
        .env("PGPASSWORD", std::fs::read_to_string(pw).expect("password").trim())
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The live holders of the tenant's mailbox leases: mailbox name -> node id.
fn holders(url: &str, pw: &Path, tenant: &str) -> BTreeMap<String, String> {
    let prefix = format!("mailbox:{tenant}/");
    psql(url, pw, &format!("SELECT resource, owner FROM leases WHERE resource LIKE '{prefix}%' AND owner IS NOT NULL AND expires_at > clock_timestamp()"))
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(r, o)| (r.trim_start_matches(prefix.as_str()).to_string(), o.to_string()))
        .collect()
}

/// A cluster of serve nodes sharing one work folder (tenants, secrets; a log per node) and
/// one PostgreSQL schema.
struct Cluster {
    dir: PathBuf,
    url: String,
    pw: PathBuf,
    tenant: String,
    token: String,
}

impl Cluster {
    /// A tenant with mailboxes m85 .. m92 (IMAPS, IDLE, polled every second), the boxes
    /// emptied; None without the test PostgreSQL.
    fn new(name: &str) -> Option<Cluster> {
        Cluster::with_queue(name, false)
    }

    /// With `queue`: also queue "q", sending through the rig's Postfix submission as box 85.
    fn with_queue(name: &str, queue: bool) -> Option<Cluster> {
        let (url, pw) = pg_schema(&format!("c_{name}"))?;
        let dir = workdir(&format!("lease-{name}"));
        let tenant = unique(&format!("c-{name}"));
        let token = format!("tenant-lease-token-{name}-0123456789");
        let r = rig();
        for (_, n) in mailboxes() {
            r.reset_mailbox(&test_box(n).0);
        }
        let boxes: Vec<(String, u32)> = mailboxes();
        let list: Vec<(&str, u32)> = boxes.iter().map(|(m, n)| (m.as_str(), *n)).collect();
        let mut text = imap_tenant(&dir, &tenant, &token, 1, &list);
        if queue {
            text += &format!(
                "[[queue]]\nname = \"q\"\nmailboxes = [\"m85\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {}\ntls = false\n\
                 username = \"{}\"\npassword_file = \"{}\"\n",
                r.port("RIG_SUBMISSION_PORT"),
                test_box(85).0,
                dir.join("secrets/box85.pw").display()
            );
        }
        write_tenant(&dir, "lease.toml", &text);
        Some(Cluster { dir, url, pw, tenant, token })
    }

    /// Starts node `id` with the lease TTL given as `--lease-ttl` (or through
    /// MAILPLUG_LEASE_TTL_SECS with `by_env`); waits until it loaded the tenant.
    fn node(&self, id: &str, by_env: bool) -> Serve {
        self.node_ttl(id, TTL, by_env)
    }

    fn node_ttl(&self, id: &str, ttl: u64, by_env: bool) -> Serve {
        self.node_at(id, &self.url, ttl, by_env)
    }

    /// `node_ttl` reaching the store at `url` (the same database, maybe through a proxy).
    fn node_at(&self, id: &str, url: &str, ttl: u64, by_env: bool) -> Serve {
        let ttl = ttl.to_string();
        let mut args = vec!["--store", url, "--store-password-file", self.pw.to_str().expect("utf8"), "--node-id", id];
        let mut env = Vec::new();
        if by_env {
            env.push(("MAILPLUG_LEASE_TTL_SECS", ttl.as_str()));
        } else {
            args.extend(["--lease-ttl", ttl.as_str()]);
        }
        let s = Serve::start_with(&self.dir, &format!("{id}.log"), &args, &env);
        wait_for("the tenant loaded", 60, || (s.get(&format!("/v1/tenants/{}", self.tenant), Some(&self.token)).0 == 200).then_some(()));
        s
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{id}.log"))).unwrap_or_default()
    }

    /// The mailboxes node `s` says it serves (its API's `node` and phase).
    fn served_by(&self, s: &Serve, id: &str) -> Vec<String> {
        let t = s.admin(&format!("/v1/tenants/{}", self.tenant));
        mailboxes()
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| {
                let st = &t["mailboxes"][m.as_str()];
                let mine = st["node"] == id;
                assert_eq!(mine, st["state"] != "elsewhere", "{m} on {id}: node and phase agree: {st}");
                mine
            })
            .collect()
    }

    /// Waits until the nodes `(serve, id)` split the mailboxes evenly: in the lease table each
    /// mailbox has exactly one live holder, each node holds the same number, and each node's
    /// API says it serves exactly the ones it holds. Returns mailbox -> node id.
    fn wait_split(&self, nodes: &[(&Serve, &str)], secs: u64) -> BTreeMap<String, String> {
        let each = mailboxes().len() / nodes.len();
        wait_for(&format!("the mailboxes split {each} per node"), secs, || {
            let h = holders(&self.url, &self.pw, &self.tenant);
            if h.len() != mailboxes().len() {
                return None;
            }
            for (s, id) in nodes {
                let held: Vec<String> = h.iter().filter(|(_, o)| o.as_str() == *id).map(|(m, _)| m.clone()).collect();
                if held.len() != each || self.served_by(s, id) != held {
                    return None;
                }
            }
            Some(h)
        })
    }

    /// Puts a message with Message-ID `<what>-<mailbox>-<pid>@test` into each of `boxes`.
    fn put_each(&self, what: &str, boxes: &[String]) -> Vec<String> {
        let r = rig();
        boxes
            .iter()
            .map(|m| {
                let n: u32 = m[1..].parse().expect("box number");
                let mid = format!("{what}-{m}-{}@test", std::process::id());
                r.put(&test_box(n).0, "INBOX", &sample_message(&mid, &format!("lease test {what}")));
                mid
            })
            .collect()
    }

    /// Waits (at most `secs`) until every one of `mids` is listed, then asserts that every
    /// stored message of the tenant is stored exactly once and that `total` are stored.
    fn wait_stored_once(&self, s: &Serve, mids: &[String], total: usize, secs: u64) {
        let list = wait_for(&format!("{} messages listed", mids.len()), secs, || {
            let list = try_messages(s, &self.tenant, &self.token).ok()?;
            mids.iter().all(|m| !with_mid(&list, m).is_empty()).then_some(list)
        });
        for m in &list {
            let mid = m["message_id"].as_str().unwrap_or_default();
            assert_eq!(with_mid(&list, mid).len(), 1, "{mid} is stored once: {list:?}");
        }
        assert_eq!(list.len(), total, "every message stored, none twice: {list:?}");
    }
}

impl Drop for Cluster {
    /// Removes the work folder; on a failure it first shows the end of each node's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!("---- {} (last lines)\n{}", e.path().display(), lines[lines.len().saturating_sub(40)..].join("\n"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        drop_schema(&self.url, &self.pw);
    }
}

fn all_boxes() -> Vec<String> {
    mailboxes().into_iter().map(|(m, _)| m).collect()
}

fn of(split: &BTreeMap<String, String>, id: &str) -> Vec<String> {
    split.iter().filter(|(_, o)| o.as_str() == id).map(|(m, _)| m.clone()).collect()
}

/// Two nodes split the mailboxes 4 + 4, each served by exactly one; mail that was waiting at
/// the start and mail arriving later is stored once (a mailbox handed from the first node to
/// the second continues from its saved sync state). SIGTERM on one node releases its leases:
/// the other takes them over at once, without waiting for the TTL.
#[test]
fn two_nodes_split_the_mailboxes_and_store_each_message_once() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = Cluster::new("split") else { return };
    let early = c.put_each("early", &all_boxes());
    let a = c.node("c-split-a", false);
    // Node a alone takes everything and stores what was waiting.
    c.wait_stored_once(&a, &early, 8, 90);
    let b = c.node("c-split-b", true);
    let split = c.wait_split(&[(&a, "c-split-a"), (&b, "c-split-b")], 60);
    // Either node's API names the node serving each mailbox.
    for s in [&a, &b] {
        let t = s.admin(&format!("/v1/tenants/{}", c.tenant));
        for (m, owner) in &split {
            assert_eq!(t["mailboxes"][m.as_str()]["node"], owner.as_str(), "{m}: {t}");
        }
    }
    let m = a.metrics();
    assert_eq!(metric(&m, "mailplug_leases_held{kind=\"mailbox\"}"), Some(4.0), "{m}");
    assert_eq!(metric(&m, "mailplug_live_nodes"), Some(2.0), "{m}");
    let later = c.put_each("later", &all_boxes());
    c.wait_stored_once(&b, &later, 16, 60);
    // Each message was stored by the node holding its mailbox (the API of either node reads
    // the same store).
    assert!(c.log("c-split-a").contains("lease acquired"), "node a logs its leases");

    // SIGTERM: b releases; a takes b's mailboxes well before their TTL would have run out.
    let b_boxes = of(&split, "c-split-b");
    let (status, _) = b.terminate();
    assert!(status.success(), "b stops cleanly: {status}");
    let stopped = Instant::now();
    assert!(c.log("c-split-b").contains("leases released"), "b released its leases:\n{}", c.log("c-split-b"));
    wait_for("a holds every mailbox", 30, || (c.served_by(&a, "c-split-a").len() == 8).then_some(()));
    let took = stopped.elapsed();
    eprintln!("after SIGTERM on b, a served all mailboxes in {took:?}");
    assert!(took < Duration::from_secs(TTL * 2 + 2), "taken over in {took:?}");
    let after = c.put_each("after-term", &b_boxes);
    c.wait_stored_once(&a, &after, 20, 60);
}

/// kill -9 one of two nodes: its mailboxes are served by the other within the TTL plus a claim
/// round and a poll interval; mail that arrived meanwhile is stored once.
#[test]
fn a_killed_node_s_mailboxes_are_taken_over_within_the_ttl() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = Cluster::new("kill") else { return };
    let a = c.node("c-kill-a", false);
    let mut b = c.node("c-kill-b", false);
    let split = c.wait_split(&[(&a, "c-kill-a"), (&b, "c-kill-b")], 60);
    let first = c.put_each("first", &all_boxes());
    c.wait_stored_once(&a, &first, 8, 60);

    b.child.kill().expect("kill -9");
    b.child.wait().expect("reaped");
    let killed = Instant::now();
    let b_boxes = of(&split, "c-kill-b");
    let during = c.put_each("during", &b_boxes);
    wait_for("a holds every mailbox", 30, || (holders(&c.url, &c.pw, &c.tenant).values().all(|o| o == "c-kill-a") && c.served_by(&a, "c-kill-a").len() == 8).then_some(()));
    let leased = killed.elapsed();
    c.wait_stored_once(&a, &during, 12, 60);
    let stored = killed.elapsed();
    eprintln!("after kill -9 of b: a held its leases after {leased:?}, stored its mail after {stored:?}");
    // TTL (b's leases and heartbeat expire) + a heartbeat period of a (TTL / 3) + a claim
    // round, with room for a loaded machine.
    assert!(leased < Duration::from_secs(TTL * 2 + 3), "taken over in {leased:?}");
    let m = a.metrics();
    assert_eq!(metric(&m, "mailplug_live_nodes"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "mailplug_leases_held{kind=\"mailbox\"}"), Some(8.0), "{m}");
}

/// SIGSTOP one of two nodes past its TTL: the other takes its mailboxes over and stores their
/// mail. SIGCONT: the paused node finds its leases lost (by its clock or a refused write), stops
/// those actors without storing anything, joins again and gets its share back; no message is
/// stored twice.
#[test]
fn a_paused_node_loses_its_leases_and_stores_nothing_twice() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = Cluster::new("pause") else { return };
    let a = c.node("c-pause-a", false);
    let b = c.node("c-pause-b", false);
    let split = c.wait_split(&[(&a, "c-pause-a"), (&b, "c-pause-b")], 60);
    let b_boxes = of(&split, "c-pause-b");
    let pid = b.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc_kill(pid, 19) }, 0, "SIGSTOP");
    // Mail for b's mailboxes while it is paused: b's IDLE connections are told about it too.
    let paused = c.put_each("paused", &b_boxes);
    wait_for("a holds every mailbox", 30, || (holders(&c.url, &c.pw, &c.tenant).values().all(|o| o == "c-pause-a")).then_some(()));
    c.wait_stored_once(&a, &paused, 4, 60);
    // SAFETY: as above.
    assert_eq!(unsafe { libc_kill(pid, 18) }, 0, "SIGCONT");
    wait_for("b says its leases were lost", 30, || c.log("c-pause-b").contains("lease lost").then_some(()));
    let log = c.log("c-pause-b");
    assert!(log.contains("its work stops on this node"), "{log}");
    for l in log.lines().filter(|l| l.contains("lease lost")).take(2) {
        eprintln!("b: {l}");
    }
    // b joins again and the nodes split anew; mail to every mailbox is stored once.
    c.wait_split(&[(&a, "c-pause-a"), (&b, "c-pause-b")], 60);
    let m = b.metrics();
    assert!(metric(&m, "mailplug_leases_lost_total{kind=\"mailbox\"}").unwrap_or(0.0) >= 4.0, "{m}");
    let after = c.put_each("after-pause", &all_boxes());
    c.wait_stored_once(&b, &after, 12, 60);
}

/// A TCP proxy to the test PostgreSQL that can cut the path: every connection through it is
/// closed and new ones are closed at once (the database unreachable for one node only), until
/// restored.
struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (cut, conns) = (std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)), std::sync::Arc::new(Mutex::new(Vec::new())));
        let (cut2, conns2) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                if cut2.load(Ordering::SeqCst) {
                    let _ = c.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(&target) else { continue };
                let (Ok(c2), Ok(up2)) = (c.try_clone(), up.try_clone()) else { continue };
                {
                    let mut list = conns2.lock().unwrap();
                    list.extend([c.try_clone().expect("clone"), up.try_clone().expect("clone")]);
                }
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(c, up2);
                pipe(up, c2);
            }
        });
        Proxy { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The log timestamp (RFC 3339, UTC, fixed width) of the last line with all of `words`.
fn last_at(log: &str, words: &[&str]) -> Option<String> {
    log.lines().filter(|l| words.iter().all(|w| l.contains(w))).last().map(|l| l.split(' ').next().unwrap_or_default().to_string())
}

/// One node loses its path to the database: its renewals fail, and before its leases can
/// expire in the database (so before the other node may take them) it drops them by its own
/// clock and stops those mailboxes' work; the other node takes them over and stores their
/// mail once. When the path is back, the node joins again and the mailboxes split anew.
#[test]
fn a_node_cut_off_from_the_database_stops_its_work_before_the_other_takes_it_over() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = Cluster::new("cut") else { return };
    let target = c.url.split('@').nth(1).and_then(|r| r.split('/').next()).expect("host:port in the URL").to_string();
    let proxy = Proxy::start(target.clone());
    let via = c.url.replacen(&target, &format!("127.0.0.1:{}", proxy.port), 1);
    let a = c.node("c-cut-a", false);
    let b = c.node_at("c-cut-b", &via, TTL, false);
    let split = c.wait_split(&[(&a, "c-cut-a"), (&b, "c-cut-b")], 60);
    let b_boxes = of(&split, "c-cut-b");

    proxy.cut();
    let cut_at = Instant::now();
    // Looked at every 20 ms: b's last renewal started before the cut, so b drops its leases
    // at most TTL minus the margin (TTL / 5) after it, before they expire in the database.
    let dropped = |log: &str| b_boxes.iter().all(|m| last_at(log, &["lease lost", "not renewed in time", &format!("/{m} ")]).is_some());
    while !dropped(&c.log("c-cut-b")) && cut_at.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = cut_at.elapsed();
    eprintln!("b stopped its work {stopped:?} after the cut");
    assert!(stopped < Duration::from_secs(TTL), "b dropped its leases {stopped:?} after the cut");
    let during = c.put_each("cut", &b_boxes);
    wait_for("a holds every mailbox", 30, || (holders(&c.url, &c.pw, &c.tenant).values().all(|o| o == "c-cut-a")).then_some(()));
    c.wait_stored_once(&a, &during, 4, 60);
    // For each of b's mailboxes: b stopped before a took the lease.
    let (la, lb) = (c.log("c-cut-a"), c.log("c-cut-b"));
    assert!(!lb.contains("panicked"), "{lb}");
    for m in &b_boxes {
        let resource = format!("/{m} ");
        let lost = last_at(&lb, &["lease lost", "not renewed in time", &resource]).expect("b's line");
        let taken = last_at(&la, &["lease acquired", &resource]).expect("a's line");
        assert!(lost < taken, "{m}: b stopped at {lost}, a took it at {taken}");
    }

    proxy.restore();
    c.wait_split(&[(&a, "c-cut-a"), (&b, "c-cut-b")], 90);
    let after = c.put_each("after-cut", &all_boxes());
    c.wait_stored_once(&b, &after, 12, 60);
}

/// Another holder takes a mailbox's lease behind the node's back (as a node would after this
/// one was cut off): the node's next write under its old lease (storing newly arrived mail) is
/// refused, or its renewal is, whichever comes first; it stops the mailbox's actor and stores
/// nothing; once the lease is free again it takes it back and stores the message once (the
/// refused commit told the guest nothing, so nothing was marked on the server).
#[test]
fn a_write_under_a_lease_taken_by_another_holder_is_refused() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = Cluster::new("steal") else { return };
    // A long TTL: renewals every 10 s, so the write usually meets the taken lease first.
    let a = c.node_ttl("c-steal-a", 30, false);
    wait_for("a serves every mailbox", 60, || (c.served_by(&a, "c-steal-a").len() == 8).then_some(()));
    wait_for("m85 idling", 60, || (mailbox_state(&a, &c.tenant, "m85")["state"] == "idling").then_some(()));
    let resource = format!("mailbox:{}/m85", c.tenant);
    psql(&c.url, &c.pw, &format!(
        "UPDATE leases SET owner = 'c-intruder', token = nextval('lease_tokens'), expires_at = clock_timestamp() + interval '10 minutes' WHERE resource = '{resource}'"
    ));
    let mid = c.put_each("stolen", &["m85".to_string()]);
    wait_for("a says m85's lease was lost", 60, || c.log("c-steal-a").lines().any(|l| l.contains("lease lost") && l.contains(&resource)).then_some(()));
    let log = c.log("c-steal-a");
    let line = log.lines().find(|l| l.contains("lease lost") && l.contains(&resource)).unwrap_or_default();
    eprintln!("a: {line}");
    assert!(line.contains("holder=\"c-intruder\""), "the log names the new holder: {line}");
    // The actor ended without storing: nothing is stored while the intruder holds the lease.
    wait_for("m85 no longer served by a", 30, || (mailbox_state(&a, &c.tenant, "m85")["state"] == "elsewhere").then_some(()));
    assert!(with_mid(&messages(&a, &c.tenant, &c.token), &mid[0]).is_empty(), "nothing stored under the lost lease");
    let m = a.metrics();
    assert_eq!(metric(&m, "mailplug_leases_lost_total{kind=\"mailbox\"}"), Some(1.0), "{m}");
    // The intruder lets go: a takes the lease back at a claim round and stores the message once.
    psql(&c.url, &c.pw, &format!("UPDATE leases SET owner = NULL, expires_at = clock_timestamp() WHERE resource = '{resource}'"));
    c.wait_stored_once(&a, &mid, 1, 60);
    assert_eq!(c.served_by(&a, "c-steal-a").len(), 8);
}

/// A tenant's queue is sent by the node holding `queue:<tenant>/q`: a message enqueued through
/// the other node's API goes out within seconds (the holder's sender looks every 2 s with
/// several nodes) and once; after kill -9 of the holder the other node takes the queue over
/// and sends what is enqueued next.
#[test]
fn the_queue_is_sent_by_its_lease_holder_whichever_node_took_the_message() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = Cluster::with_queue("queue", true) else { return };
    let a = c.node("c-queue-a", false);
    let b = c.node("c-queue-b", false);
    let queue = format!("queue:{}/q", c.tenant);
    let qholder = || {
        psql(&c.url, &c.pw, &format!("SELECT owner FROM leases WHERE resource = '{queue}' AND owner IS NOT NULL AND expires_at > clock_timestamp()"))
            .trim()
            .to_string()
    };
    // 9 resources on 2 nodes: 5 + 4, the queue on one of them.
    let holder = wait_for("the mailboxes and the queue held, split 5 + 4", 60, || {
        let h = holders(&c.url, &c.pw, &c.tenant);
        let q = qholder();
        let on = |id: &str| h.values().filter(|o| o.as_str() == id).count() + usize::from(q == id);
        (h.len() == 8 && !q.is_empty() && on("c-queue-a") + on("c-queue-b") == 9 && on("c-queue-a").abs_diff(on("c-queue-b")) == 1).then_some(q)
    });
    let (mut holding, other) = if holder == "c-queue-a" { (a, b) } else { (b, a) };
    let to = test_box(86).0;
    let send = |s: &Serve, what: &str| -> (String, Instant) {
        let body = serde_json::json!({"to": [to], "subject": format!("lease queue {what} {}", std::process::id()), "text": "through the queue's lease holder\n"}).to_string();
        let (status, v) = s.call("POST", &format!("/v1/tenants/{}/queues/q/outbox", c.tenant), Some(&c.token), Some(&body));
        assert_eq!(status, 201, "enqueue: {v}");
        (v["id"].as_str().expect("row id").to_string(), Instant::now())
    };
    let delivered = |s: &Serve, id: &str, secs: u64| -> Value {
        wait_for(&format!("outbox row {id} delivered"), secs, || {
            let (_, row) = s.get(&format!("/v1/tenants/{}/outbox/{id}", c.tenant), Some(&c.token));
            (row["state"] == "delivered").then_some(row)
        })
    };
    let (id, at) = send(&other, "first");
    let row = delivered(&other, &id, 30);
    let took = at.elapsed();
    eprintln!("enqueued on the other node, delivered by the holder after {took:?}");
    assert!(took < Duration::from_secs(10), "delivered after {took:?}");
    assert_eq!(row["attempts"], 1, "sent once: {row}");
    let mid = row["message_id"].as_str().expect("message id").to_string();
    // It arrives in box 86 and is stored once.
    let list = wait_for("the sent message stored", 60, || {
        let list = try_messages(&other, &c.tenant, &c.token).ok()?;
        (!with_mid(&list, &mid).is_empty()).then_some(list)
    });
    assert_eq!(with_mid(&list, &mid).len(), 1, "{list:?}");

    // The holder dies: the other node takes the queue over and sends what comes next.
    holding.child.kill().expect("kill -9");
    holding.child.wait().expect("reaped");
    let other_id = if holder == "c-queue-a" { "c-queue-b" } else { "c-queue-a" };
    wait_for("the queue taken over", 30, || (qholder() == other_id).then_some(()));
    let (id2, _) = send(&other, "second");
    let row2 = delivered(&other, &id2, 30);
    assert_eq!(row2["attempts"], 1, "sent once: {row2}");
}

/// The webhook deliverer (under the tenant's `webhook:<tenant>` lease) is woken when a message
/// is stored: the webhook arrives well under a second after the message.stored event, with
/// the deliverer's poll set to a minute.
#[test]
fn a_webhook_is_delivered_at_once_when_a_message_is_stored() {
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let Some((url, pw)) = pg_schema("c_hook") else { return };
    let dir = workdir("lease-hook");
    let tenant = unique("c-hook");
    let token = "tenant-lease-token-hook-0123456789";
    let (user, _) = test_box(85);
    rig().reset_mailbox(&user);
    let hook = HookReceiver::start(200);
    let secret = dir.join("secrets/hook.secret");
    private(&secret, "serve-lease-webhook-secret-0123456789");
    let mut t = imap_tenant(&dir, &tenant, token, 1, &[("m85", 85)]);
    t += &format!("[webhook]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_file = \"{}\"\ntimeout_secs = 5\n", hook.port, secret.display());
    write_tenant(&dir, "hook.toml", &t);
    let args = ["--store", url.as_str(), "--store-password-file", pw.to_str().expect("utf8"), "--node-id", "c-hook-a", "--lease-ttl", "3"];
    let s = Serve::start_with(&dir, "hook.log", &args, &[("MAILPLUG_WEBHOOK_POLL_SECS", "60")]);
    wait_for("the webhook and mailbox leases held", 60, || {
        let m = s.metrics();
        (metric(&m, "mailplug_leases_held{kind=\"webhook\"}") == Some(1.0) && metric(&m, "mailplug_leases_held{kind=\"mailbox\"}") == Some(1.0)).then_some(())
    });
    wait_for("the mailbox idling", 60, || (mailbox_state(&s, &tenant, "m85")["state"] == "idling").then_some(()));
    let (status, events) = sse_stream(&s.addr, &format!("/v1/tenants/{tenant}/events"), token, None);
    assert_eq!(status, 200);
    let mid = format!("hook-{}@test", std::process::id());
    rig().put(&user, "INBOX", &sample_message(&mid, "webhook wake-up"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored_at = loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(SseItem::Event(_, kind, data)) if kind == "message.stored" && data["data"]["message_id"] == mid.as_str() => break Instant::now(),
            Ok(_) => {}
            Err(_) => panic!("no message.stored event for {mid} within 60 s"),
        }
    };
    let delivered = |h: &HookReceiver| h.requests().iter().any(|b| b["data"]["message_id"] == mid.as_str());
    let until = Instant::now() + Duration::from_secs(10);
    while !delivered(&hook) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = stored_at.elapsed();
    assert!(delivered(&hook), "the webhook arrived within 10 s (its poll is 60 s)");
    eprintln!("webhook {took:?} after the message.stored event");
    assert!(took < Duration::from_secs(1), "the webhook arrived {took:?} after the message.stored event");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    drop_schema(&url, &pw);
}
