//! `mailplug-bench send-steps [MESSAGES] [ROUNDS]` (defaults 1000 15): the component's side of
//! a batch send without a network. The real component (`MAILPLUG_WASM`) is driven the way the
//! driver drives it against smtp-sink: the steady burst "250 queued / 250 / 250 / 354" per
//! message as one `received` step, each `need-message` answered with `clean` in a
//! `message-data` step. Prints the median time per message of each kind of step over the
//! rounds, and what one `step(timer)` that does nothing costs (the fixed price of a call).
//! What the send bench's gap to the raw client is made of, without the network's spread.

use std::time::{Duration, Instant};

use mailplug_host::engine::{
    Action, BasicCredentials, BatchData, BatchEnvelope, CleanBytes, Credentials, Event, GuestLimits, GuestSecurity, GuestServer,
    Instance, MessageBytes, SessionHandle, SubmissionServer,
};
use mailplug_tests::plugin;

const SIZE: u64 = 10 * 1024;
const BURST: &[u8] = b"250 2.0.0 Ok: queued as 4F2C81A2B3\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";

#[derive(Default)]
struct Times {
    received: Duration,
    message_data: Duration,
    timer: Duration,
    steps: usize,
    done: usize,
}

/// The `need-message` indexes and outcomes of one step's actions.
fn scan(actions: &[Action], want: &mut Vec<u32>, t: &mut Times) {
    for a in actions {
        match a {
            Action::NeedMessage(i) => want.push(*i),
            Action::MessageDone(_) => t.done += 1,
            _ => {}
        }
    }
}

/// Answers every `need-message` asked for with `clean`, as the driver does, in one step.
async fn answer(instance: &mut Instance, s: SessionHandle, want: &mut Vec<u32>, t: &mut Times) {
    let list: Vec<BatchData> =
        want.drain(..).map(|index| BatchData { index, bytes: MessageBytes::Clean(CleanBytes { size: SIZE, eight_bit: false }) }).collect();
    let event = Event::MessageData(list);
    let start = Instant::now();
    let (a, _) = instance.step(s, &event, 1_000_000).await.expect("message data");
    t.message_data += start.elapsed();
    t.steps += 1;
    scan(&a, want, t);
}

async fn round(n: usize) -> Times {
    let mut instance = plugin().instantiate(16 << 20, 10_000).await.expect("instance");
    let sub = SubmissionServer {
        server: GuestServer { host: "127.0.0.1".into(), port: 2525, security: GuestSecurity::InsecurePlaintext },
        credentials: Credentials::Basic(BasicCredentials { username: "bench@example.test".into(), password: "Sink-Pw-1!".into() }),
        helo_name: "bench".into(),
        limits: GuestLimits { max_line_bytes: 8192, max_message_bytes: 1 << 20, max_batch_messages: 1, max_batch_bytes: 1 << 20, reply_timeout_ms: 30_000 },
    };
    let envelopes: Vec<BatchEnvelope> = (0..n)
        .map(|i| BatchEnvelope {
            message_id: format!("{i}.1765090000000@bench.example.test"),
            envelope_from: "bench@example.test".into(),
            envelope_to: vec!["sink@example.test".into()],
            size: SIZE,
        })
        .collect();
    let now = 1_000_000;
    let s = instance.open_batch(&sub, &envelopes, now).await.expect("open batch");
    let mut t = Times::default();
    let mut want = Vec::new();
    let (a, _) = instance.step(s, &Event::Connected, now).await.expect("connected");
    scan(&a, &mut want, &mut t);
    answer(&mut instance, s, &mut want, &mut t).await;
    for r in [&b"220 sink ESMTP\r\n"[..], b"250-sink\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n", b"235 2.7.0 Ok\r\n", b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"] {
        let (a, _) = instance.step(s, &Event::Received(r.to_vec()), now).await.expect("setup");
        scan(&a, &mut want, &mut t);
        while !want.is_empty() {
            answer(&mut instance, s, &mut want, &mut t).await;
        }
    }
    t.message_data = Duration::ZERO;
    t.steps = 0;
    for _ in 1..n {
        let event = Event::Received(BURST.to_vec());
        let start = Instant::now();
        let (a, _) = instance.step(s, &event, now).await.expect("burst");
        t.received += start.elapsed();
        scan(&a, &mut want, &mut t);
        while !want.is_empty() {
            answer(&mut instance, s, &mut want, &mut t).await;
        }
        let start = Instant::now();
        let (a, _) = instance.step(s, &Event::Timer, now).await.expect("timer");
        t.timer += start.elapsed();
        assert!(a.is_empty());
    }
    let (a, _) = instance.step(s, &Event::Received(b"250 2.0.0 Ok: queued\r\n221 Bye\r\n".to_vec()), now).await.expect("end");
    scan(&a, &mut want, &mut t);
    assert_eq!(t.done, n, "every message has its outcome");
    instance.drop_session(s).await;
    t
}

pub async fn run(args: &[usize]) {
    let (n, rounds) = (*args.first().unwrap_or(&1000), *args.get(1).unwrap_or(&15));
    let _ = round(n).await; // warm-up (compiles or maps the component)
    let mut rows: Vec<Times> = Vec::new();
    for _ in 0..rounds {
        rows.push(round(n).await);
    }
    let per = |f: &dyn Fn(&Times) -> Duration| {
        let mut v: Vec<f64> = rows.iter().map(|t| f(t).as_secs_f64() * 1e6 / (n - 1) as f64).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let steps = rows[0].steps as f64 / (n - 1) as f64;
    println!("{n} messages of {SIZE} bytes (clean), {rounds} rounds; median per message (us):");
    println!("| step | per message (us) |");
    println!("|---|---:|");
    println!("| received (the burst: outcome, commit point, next commands) | {:.2} |", per(&|t| t.received));
    println!("| message-data ({steps:.2} per message) | {:.2} |", per(&|t| t.message_data));
    println!("| timer that does nothing (the fixed price of a call) | {:.2} |", per(&|t| t.timer));
}
