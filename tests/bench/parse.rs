//! `mailplug-bench parse [MESSAGES] [ROUNDS]` (defaults 5000 5): the component's MIME parsing
//! alone. The ingest bench's generated corpus is made in memory and each message goes through
//! `parse.parse-message` of the real component (`MAILPLUG_WASM`) in one instance, as the
//! driver's parse instance does, with no network, TLS or store. Prints each round's time and
//! the median in MB/s: the guest's share of the ingest, measured without the spread of the
//! transfer, so that two components can be compared invocation by invocation.

use std::time::{Duration, Instant};

use mailplug_tests::{corpus, plugin};

use super::median;

pub async fn run(args: &[usize]) {
    let (n, rounds) = (*args.first().unwrap_or(&5000), *args.get(1).unwrap_or(&5));
    let messages: Vec<Vec<u8>> = (0..n).map(|i| corpus::message(super::ingest::SEED, i).0).collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let mut instance = plugin().instantiate(64 << 20, 10_000).await.expect("instance");
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let start = Instant::now();
        let mut parsed = 0;
        for m in &messages {
            if instance.parse_message(m).await.expect("parse call").is_ok() {
                parsed += 1;
            }
        }
        let took = start.elapsed();
        assert_eq!(parsed, n, "every corpus message parses");
        eprintln!("round {round}: {} ms", took.as_millis());
        times.push(took);
    }
    let mid: Duration = median(times);
    println!(
        "parse of the generated corpus: {n} messages = {:.1} MB, median of {rounds} rounds: {} ms, {:.1} MB/s",
        bytes as f64 / 1e6,
        mid.as_millis(),
        bytes as f64 / 1e6 / mid.as_secs_f64()
    );
}
