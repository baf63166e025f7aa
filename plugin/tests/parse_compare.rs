//! The vendored mail-parser (vendor/mail-parser: faster body decoders) must parse every message
//! exactly as the published mail-parser 0.11.9 does: same parts, offsets, decoded bodies and
//! attachments, same encoding problems. Compared on the generated benchmark corpus, the guest's
//! sample messages, the MIME fuzz seeds, and mutations of all of them that break encodings and
//! boundaries (the decoders' fast paths must leave exactly those cases to the byte loops).

#[path = "../../tests/src/corpus.rs"]
#[allow(dead_code)]
mod corpus;

use corpus::Rng;

/// Debug builds of mail-parser panic on some malformed input (debug assertions, arithmetic
/// overflow; the guest contains that, see `parse::parse_message`): both must then panic alike.
fn same_parse(raw: &[u8]) {
    let run = |f: &dyn Fn() -> String| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| "panic".into());
    let ours = run(&|| format!("{:?}", mail_parser::MessageParser::default().parse(raw)));
    let upstream = run(&|| format!("{:?}", mail_parser_upstream::MessageParser::default().parse(raw)));
    if ours != upstream {
        let at = ours.bytes().zip(upstream.bytes()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "parse differs from mail-parser 0.11.9 at {at} for {:?}\nours:     {}\nupstream: {}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)]),
            &ours[at.saturating_sub(200)..(at + 200).min(ours.len())],
            &upstream[at.saturating_sub(200)..(at + 200).min(upstream.len())]
        );
    }
}

fn samples() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for dir in ["tests/samples", "fuzz/seeds/mime"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut paths: Vec<_> = std::fs::read_dir(&dir).expect("samples").flatten().map(|e| e.path()).collect();
        paths.sort();
        all.extend(paths.iter().map(|p| std::fs::read(p).expect("sample")));
    }
    assert!(all.len() > 30, "{} samples", all.len());
    all
}

/// Changes that hit the fast paths' edges: padding, whitespace and bad bytes inside base64
/// lines, CR or LF dropped, dashes and boundaries in odd places, lines cut short.
fn mutate(rng: &mut Rng, raw: &[u8]) -> Vec<u8> {
    const NASTY: &[&[u8]] = &[
        b"=", b"==", b"-", b"--", b"\r", b"\n", b"\r\n", b" ", b"\t", b"=\r\n", b"=4", b"=C3=", b"*", b"\x80", b"QQ==",
        b"\r\n--mix-b\r\n", b"\r\n--mix-b--\r\n", b"--alt-b", b"\r\n\r\n",
    ];
    let mut bytes = raw.to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => {
                let insert = NASTY[rng.below(NASTY.len())];
                bytes.splice(at..at, insert.iter().copied());
            }
            1 => {
                let end = (at + 1 + rng.below(4)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

#[test]
fn generated_corpus_parses_as_upstream() {
    for i in 0..400 {
        same_parse(&corpus::message(11, i).0);
    }
}

#[test]
fn samples_and_fuzz_seeds_parse_as_upstream() {
    for raw in samples() {
        same_parse(&raw);
    }
}

#[test]
fn mutated_messages_parse_as_upstream() {
    let mut rng = Rng::new(0x5eed);
    let mut inputs = samples();
    // Small corpus messages, so that mutations land in bodies often.
    inputs.extend((0..200).map(|i| corpus::message(13, i).0).filter(|m| m.len() < 8 * 1024).take(40));
    for raw in &inputs {
        for _ in 0..60 {
            same_parse(&mutate(&mut rng, raw));
        }
    }
}

#[test]
fn base64_and_quoted_printable_edge_cases_parse_as_upstream() {
    let head = "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n";
    let bodies: &[&str] = &[
        "QUJD\r\nREVG\r\n",
        "QUJD\nREVG\n",
        "QUI=\r\nQUJD\r\n",
        "QQ==QUJD\r\n",
        "QUJDRA\r\nQUJD\r\n",
        "QUJD \r\nQUJD\r\n",
        "QUJD\r\n-QUJD\r\n",
        "QUJD\r\n--b-\r\n",
        "QUJD--b\r\n",
        "QUJD\r\n\r\n\r\nQUJD",
        "====\r\nQUJD\r\n",
        "QUJD\r\r\nQUJD\r\n",
    ];
    for cte in ["base64", "quoted-printable", "8bit"] {
        for ctype in ["application/octet-stream", "text/plain; charset=iso-8859-1", "text/html"] {
            for body in bodies.iter().chain(&["caf=C3=A9 =\r\nsoft  \r\ntrailing \t\r\n", "a=\r\n--b", "x -- y\r\n-- \r\n", "=3D=3d=zz=4\r\n b=20 \r\n=\r\n==41\r\n"]) {
                for end in ["\r\n--b--\r\n", "--b--", "\r\n--b", ""] {
                    let raw = format!("{head}Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}{end}");
                    same_parse(raw.as_bytes());
                    // The same part as a whole message, without any boundary.
                    let single = format!("From: a@example.com\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}{end}");
                    same_parse(single.as_bytes());
                }
            }
        }
    }
}

/// The text fast paths (ASCII runs in the single-byte charsets 16 bytes at a time, vectorised UTF-8 validation,
/// quoted-printable literals 16 bytes at a time) against upstream: every byte value in every
/// single-byte charset mail-parser knows, valid and broken UTF-8, and quoted-printable runs
/// whose stops fall at each position of a 16-byte step.
#[test]
fn text_decoding_fast_paths_parse_as_upstream() {
    let every_byte: Vec<u8> = (0..=255u8).filter(|b| !matches!(b, b'\r' | b'\n')).collect();
    let mut mixed = b"plain ascii run of more than sixteen bytes ".to_vec();
    mixed.extend_from_slice(&every_byte);
    mixed.extend_from_slice(b" and ascii again \xe4\xf6\xfc\xdf 0123456789abcdef0123456789abcdef\xff");
    let charsets = [
        "iso-8859-1", "iso-8859-2", "iso-8859-3", "iso-8859-4", "iso-8859-5", "iso-8859-6", "iso-8859-7", "iso-8859-8", "iso-8859-9",
        "iso-8859-10", "iso-8859-13", "iso-8859-14", "iso-8859-15", "iso-8859-16", "windows-1250", "windows-1251", "windows-1252",
        "windows-1253", "windows-1254", "windows-1255", "windows-1256", "windows-1257", "windows-1258", "koi8-r", "koi8-u", "ibm866",
        "ibm850", "x-mac-roman", "x-mac-cyrillic", "windows-874", "tis-620", "us-ascii", "utf-8", "unknown-8bit",
    ];
    let utf8: &[&[u8]] = &[
        "Grüße aus der Straße, déjà reçu".as_bytes(),
        b"broken \xc3 lead, \xe2\x82 short, \xf0\x9f\x98 cut, \xed\xa0\x80 surrogate, \xc0\xaf overlong, \xff\xfe",
        b"valid up to the very end: \xc3\xa4",
        b"cut at the very end: \xc3",
    ];
    let mut bodies: Vec<Vec<u8>> = vec![every_byte.clone(), mixed.clone()];
    bodies.extend(utf8.iter().map(|b| b.to_vec()));
    for cte in ["8bit", "quoted-printable", "base64"] {
        for charset in charsets {
            for body in &bodies {
                let encoded = match cte {
                    "quoted-printable" => corpus::quoted_printable(body),
                    "base64" => corpus::base64_lines(body),
                    _ => body.clone(),
                };
                let mut raw = format!(
                    "From: a@example.com\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
                     Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
                )
                .into_bytes();
                raw.extend_from_slice(&encoded);
                raw.extend_from_slice(b"\r\n--b--\r\n");
                same_parse(&raw);
            }
        }
    }
    // Quoted-printable: each kind of stop at every offset of a 16-byte step (corpus.rs).
    for raw in corpus::quoted_printable_stops() {
        same_parse(&raw);
    }
    // Single-byte charsets: ASCII runs ending at every offset of a 16-byte step.
    for raw in corpus::single_byte_runs() {
        same_parse(&raw);
    }
    // base64 lines decoded together, with an odd line at every place.
    for raw in corpus::base64_batches() {
        same_parse(&raw);
    }
}
