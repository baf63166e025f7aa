//! The guest's parse path, built natively (release profile), over the generated corpus of the
//! ingest benchmark (tests/src/corpus.rs). Meant to run under callgrind, which counts
//! instructions rather than time, so figures compare across runs on a loaded machine:
//!
//!   CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
//!     cargo build --release -p mailplug-plugin --example parse_bench
//!   valgrind --tool=callgrind $CARGO_TARGET_DIR/release/examples/parse_bench 500
//!   callgrind_annotate --inclusive=yes callgrind.out.* | grep parse_structured
//!
//! (The release profile's LTO inlines `parse_message` into `main`; its callee
//! `parse_structured` carries the inclusive count. Generating the corpus is counted apart.)
//!
//! Usage: parse_bench [MESSAGES] [SEED]   (defaults 1000 7)

#[path = "../../tests/src/corpus.rs"]
#[allow(dead_code)]
mod corpus;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, seed) = (*args.first().unwrap_or(&1000) as usize, *args.get(1).unwrap_or(&7));
    let messages: Vec<Vec<u8>> = (0..n).map(|i| corpus::message(seed, i).0).collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let start = std::time::Instant::now();
    let (mut parsed, mut attachments, mut attachment_bytes, mut text_bytes) = (0, 0, 0u64, 0);
    for raw in &messages {
        if let Ok(m) = mailplug_plugin::parse::parse_message(raw) {
            parsed += 1;
            attachments += m.attachments.len();
            attachment_bytes += m.attachments.iter().map(|a| a.size).sum::<u64>();
            text_bytes += m.text_body.map_or(0, |t| t.len());
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{n} messages, {:.1} MB: {parsed} parsed, {attachments} attachments ({:.1} MB decoded), {:.1} MB text; {:.0} ms ({:.0} MB/s)",
        bytes as f64 / 1e6,
        attachment_bytes as f64 / 1e6,
        text_bytes as f64 / 1e6,
        elapsed.as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
}
