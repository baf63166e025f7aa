//! Leases of `mailplug serve` nodes on the rig's PostgreSQL (tests/rig/postgres/up.sh): the
//! renewer's batch renewal, the nodes' heartbeats (how many nodes share the work) and the
//! webhook deliverer's event marks under the tenant's `webhook:<tenant>` lease. Without the rig's
//! PostgreSQL every test says so and passes without checking anything.
//!
//! Tests that count nodes work in a schema of their own (`pg_schema`): every node of one store
//! counts, so nodes of another test would change the count.

use std::time::Duration;

use mailplug_host::error::HostError;
use mailplug_host::store::events::Events;
use mailplug_host::store::outbox::{Envelope, NewOutbound, Outbox};
use mailplug_host::store::postgres::lease::{mailbox_resource, node_resource, webhook_resource};
use mailplug_host::store::postgres::{Lease, Leases, PgStore};
use mailplug_host::tokens::SecretKeys;
use mailplug_tests::pg::{acquire_when_free, drop_schema, is_lease_lost, pg_env, pg_schema, unique};

const KEY: [u8; 32] = [9; 32];

fn connect(url: &str, pw: &std::path::Path) -> PgStore {
    PgStore::connect_with_keys(url, Some(pw), SecretKeys::new(Some(&KEY), None)).expect("connects to the test PostgreSQL")
}

fn pg() -> Option<PgStore> {
    let (url, pw) = pg_env()?;
    Some(connect(&url, &pw))
}


#[test]
fn renewing_all_leases_in_one_statement_reports_the_lost_ones() {
    let Some(pg) = pg() else { return };
    let t = unique("c-renew");
    let long = Duration::from_secs(30);
    let short = Duration::from_millis(400);
    let r: Vec<String> = (0..4).map(|i| mailbox_resource(&t, &format!("m{i}"))).collect();
    let kept = pg.acquire_free(&r[..2], "node-a", long, 2).unwrap();
    assert_eq!(kept.len(), 2);
    let taken = pg.acquire(&r[2], "node-a", short).unwrap().unwrap();
    let expired = pg.acquire(&r[3], "node-a", short).unwrap().unwrap();
    // r2 expires and node-b takes it; r3 expires and nobody takes it.
    let b = acquire_when_free(&pg, &r[2], "node-b", long);
    while pg.list_leases(&r[3]).unwrap()[0].live {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut all = kept.clone();
    all.push(taken.clone());
    all.push(expired.clone());
    // A stale token of a lease node-a still holds is lost too.
    let stale = Lease { token: kept[0].token - 1_000_000, ..kept[0].clone() };
    all.push(stale.clone());
    let renewal = pg.renew_all(&all, Duration::from_secs(60)).unwrap();
    let renewed: Vec<&str> = renewal.renewed.iter().map(|l| l.resource.as_str()).collect();
    assert_eq!(renewed, [r[0].as_str(), r[1].as_str()]);
    for (new, old) in renewal.renewed.iter().zip(&kept) {
        assert_eq!(new.token, old.token, "a renewal keeps the token");
        assert!(new.expires_at_ms >= old.expires_at_ms + 25_000, "extended to about 60 s: {} -> {}", old.expires_at_ms, new.expires_at_ms);
    }
    assert_eq!(
        renewal.lost,
        vec![(taken, Some("node-b".to_string())), (expired, None), (stale, Some("node-a".to_string()))],
        "lost, with who holds each now"
    );
    // node-b's lease was not touched by node-a's renewal.
    assert_eq!(pg.list_leases(&r[2]).unwrap()[0].expires_at_ms, b.expires_at_ms);
    assert_eq!(pg.renew_all(&[], long).unwrap(), Default::default(), "nothing held: no statement");
}

#[test]
fn heartbeats_count_the_live_nodes() {
    let Some((url, pw)) = pg_schema("c-nodes") else { return };
    let pg = connect(&url, &pw);
    let ttl = Duration::from_millis(700);
    let a = pg.heartbeat("node-a", ttl).unwrap();
    assert_eq!((a.lease.resource.as_str(), a.live_nodes), ("node:node-a", 1));
    let b = pg.heartbeat("node-b", Duration::from_secs(30)).unwrap();
    assert_eq!(b.live_nodes, 2);
    let a2 = pg.heartbeat("node-a", ttl).unwrap();
    assert_eq!((a2.live_nodes, a2.lease.token), (2, a.lease.token), "a live heartbeat keeps its token");
    // node-a stops beating (killed, paused): it no longer counts after its TTL.
    std::thread::sleep(ttl + Duration::from_millis(300));
    assert_eq!(pg.heartbeat("node-b", Duration::from_secs(30)).unwrap().live_nodes, 1);
    // It comes back with a new token; a released heartbeat does not count.
    let a3 = pg.heartbeat("node-a", ttl).unwrap();
    assert!(a3.lease.token > a.lease.token);
    assert_eq!(a3.live_nodes, 2);
    pg.release(&b.lease).unwrap();
    assert_eq!(pg.heartbeat("node-a", ttl).unwrap().live_nodes, 1, "node-b left");
    let listed = pg.list_leases(&node_resource("")).unwrap();
    assert_eq!(listed.iter().map(|l| (l.resource.as_str(), l.live)).collect::<Vec<_>>(), [("node:node-a", true), ("node:node-b", false)]);
    // Other schemas' nodes never count here (and ours not there).
    let (url2, pw2) = pg_schema("c-nodes-other").unwrap();
    assert_eq!(connect(&url2, &pw2).heartbeat("node-x", ttl).unwrap().live_nodes, 1);
    drop(pg);
    drop_schema(&url, &pw);
    drop_schema(&url2, &pw2);
}

fn outbound(tenant: &str, message_id: &str) -> NewOutbound {
    NewOutbound {
        tenant: tenant.into(),
        queue: "q".into(),
        message_id: message_id.into(),
        envelope: Envelope { from: "a@x".into(), to: vec!["b@y".into()] },
        raw: format!("Message-ID: <{message_id}>\r\n\r\nhi\r\n").into_bytes(),
        max_age_ms: 60_000,
        save_copy: None,
    }
}

#[test]
fn after_a_takeover_the_old_deliverer_cannot_mark_events() {
    let Some(pg) = pg() else { return };
    let (t, other) = (unique("c-hook"), unique("c-hook-other"));
    for m in ["1@x", "2@x", "3@x", "4@x"] {
        pg.enqueue(&outbound(&t, m), 1).unwrap();
    }
    pg.enqueue(&outbound(&other, "5@x"), 1).unwrap();
    let events = pg.next_undelivered(&t, 10).unwrap();
    assert_eq!(events.len(), 4, "one outbox.state-changed event per enqueue");
    let foreign = pg.next_undelivered(&other, 10).unwrap().remove(0);
    let res = webhook_resource(&t);
    let ttl = Duration::from_millis(500);
    let a = pg.acquire(&res, "node-a", ttl).unwrap().unwrap();
    let fenced_a = pg.fenced(a.fence());
    // While node-a holds the tenant's webhook lease its marks go through, for its tenant only.
    Events::mark_delivered(&fenced_a, &events[0].id, 10).unwrap();
    fenced_a.mark_failed(&events[1].id, 99).unwrap();
    let e = Events::mark_delivered(&fenced_a, &foreign.id, 10).unwrap_err();
    assert!(matches!(&e, HostError::NotFound(m) if m.contains(&t)), "another tenant's event is not this lease's: {e:?}");
    // A mailbox lease is not a webhook lease.
    let mb = pg.acquire(&mailbox_resource(&t, "m"), "node-a", ttl).unwrap().unwrap();
    assert!(Events::mark_delivered(&pg.fenced(mb.fence()), &events[2].id, 10).is_err());
    // node-a pauses past its lease; node-b takes the tenant's webhook over.
    let b = acquire_when_free(&pg, &res, "node-b", Duration::from_secs(30));
    for e in [
        Events::mark_delivered(&fenced_a, &events[1].id, 11).unwrap_err(),
        fenced_a.mark_failed(&events[2].id, 100).unwrap_err(),
        fenced_a.mark_dead(&events[3].id).unwrap_err(),
    ] {
        assert!(is_lease_lost(&e, &res, Some("node-b")), "{e:?}");
    }
    // Nothing of node-a's refused marks was written: node-b continues with events 1..3.
    let left = pg.next_undelivered(&t, 10).unwrap();
    assert_eq!(left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), events[1..].iter().map(|e| e.id.as_str()).collect::<Vec<_>>());
    assert_eq!((left[0].attempts, left[0].next_attempt_at_ms, left[1].attempts, left[2].dead), (1, Some(99), 0, false));
    let fenced_b = pg.fenced(b.fence());
    Events::mark_delivered(&fenced_b, &events[1].id, 12).unwrap();
    fenced_b.mark_dead(&events[2].id).unwrap();
    assert_eq!(pg.next_undelivered(&t, 10).unwrap().len(), 1);
    // Unfenced marks (the SQLite-like single node) still work.
    Events::mark_delivered(&pg, &foreign.id, 13).unwrap();
    assert!(pg.next_undelivered(&other, 10).unwrap().is_empty());
}
