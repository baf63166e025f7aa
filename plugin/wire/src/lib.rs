//! One look at a message's bytes before SMTP DATA: does it need any change on the wire?
//!
//! This crate is shared by the mailplug component (which checks the bytes a host hands over
//! with `message-data`) and by hosts (which may check a batch message themselves and answer
//! `need-message` with `clean`, so the bytes never cross into the component; see `batch-data`
//! in `wit/session.wit`). Both sides then apply exactly the same rules.
//!
//! A message is *clean* (sent as it is, with only the final dot after it) when it has no NUL,
//! every LF follows a CR, every CR is followed by an LF, and no line starts with '.' (neither
//! byte 0 nor a byte after an LF). Composed messages always are.
//!
//! The check runs 16 bytes at a time without a branch per byte or per line: each block of the
//! message is compared with the block one byte before it (`prev[k]` is the byte before
//! `cur[k]`; before byte 0 stands an imaginary LF, the start of the first line), so a block is
//! clean exactly when, in every lane, `cur == LF` equals `prev == CR`, `cur == '.'` and
//! `prev == LF` are not both true, and `cur != NUL`. A CR at the very end (no byte after it)
//! makes the message not clean. The lanes' results are ORed together and looked at once per
//! 64 bytes. The same pass ORs all bytes together, which tells whether any is above 0x7F (worth
//! BODY=8BITMIME).
//!
//! The blocks are wasm SIMD vectors in the component (wasm32 with `simd128`), SSE2 vectors on
//! x86_64 (every x86_64 CPU has SSE2), and elsewhere two u64 words per block with the same lane
//! logic (`swar`, also compiled everywhere for the tests, which compare all of them with the
//! byte-by-byte rules). Before, `memchr3` over NUL/CR/LF stopped at every line end (about 100
//! instructions of set-up per stop, 275 stops per 10 KB message).

#![no_std]

/// What one look at a message's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// The first NUL, if any.
    pub nul: Option<usize>,
    /// The message needs no change on the wire but the final dot (false when it has a NUL).
    pub clean: bool,
    /// A byte above 0x7F: only computed for a clean message (false otherwise: the encoder
    /// that handles an unclean one finds it out itself).
    pub eight_bit: bool,
}

/// Bytes per block, blocks per check.
const BLOCK: usize = 16;
const GROUP: usize = 4;

/// Scans `message` (see the module's documentation).
pub fn scan(message: &[u8]) -> Scan {
    scan_with::<native::Acc>(message)
}

/// `scan` with the lanes of `A`.
fn scan_with<A: Lanes>(message: &[u8]) -> Scan {
    let n = message.len();
    let mut acc = A::new();
    // The first block, with the imaginary LF before byte 0: built by hand.
    let first = n.min(BLOCK);
    let (mut cur, mut prev) = ([FILL; BLOCK], [FILL; BLOCK]);
    cur[..first].copy_from_slice(&message[..first]);
    prev[0] = b'\n';
    // prev[k] = message[k - 1]; in a short message that includes the last byte, before the
    // first FILL (so a CR at the end shows as a CR not followed by LF).
    let shifted = first.min(BLOCK - 1);
    prev[1..=shifted].copy_from_slice(&message[..shifted]);
    acc.block(&cur, &prev);
    if acc.bad() {
        return unclean(message, 0);
    }
    // Whole blocks from byte 16 on: `message[at - 1..]` is the previous-byte block.
    let mut at = BLOCK;
    while at + BLOCK * GROUP <= n {
        for k in 0..GROUP {
            acc.block_at(message, at + k * BLOCK);
        }
        if acc.bad() {
            return unclean(message, at);
        }
        at += BLOCK * GROUP;
    }
    // Everything before `checked` is known to have no NUL.
    let checked = at;
    while at + BLOCK <= n {
        acc.block_at(message, at);
        at += BLOCK;
    }
    if at < n {
        // The last, partial block, padded with FILL (after the last byte, so a CR there is
        // followed by FILL, not LF: not clean).
        let left = n - at;
        let (mut cur, mut prev) = ([FILL; BLOCK], [FILL; BLOCK]);
        cur[..left].copy_from_slice(&message[at..]);
        prev[..=left].copy_from_slice(&message[at - 1..]);
        acc.block(&cur, &prev);
    } else if n >= BLOCK && message[n - 1] == b'\r' {
        // Ends with a CR on a block border: no byte follows it.
        return unclean(message, checked.min(n));
    }
    if acc.bad() {
        return unclean(message, checked.min(n));
    }
    Scan { nul: None, clean: true, eight_bit: acc.high() }
}

/// What a host may say of a batch message's bytes it checked itself (`clean` in `batch-data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clean {
    /// A byte above 0x7F (worth BODY=8BITMIME).
    pub eight_bit: bool,
}

/// `Some` when `message` may be written as it is, followed only by ".\r\n": clean (see the
/// crate's documentation) and ending with CRLF. The host answers `need-message` with `clean`
/// for such a message and keeps the bytes; anything else is handed over (`raw`) for the
/// component to encode or refuse.
pub fn clean_for_data(message: &[u8]) -> Option<Clean> {
    if !message.ends_with(b"\r\n") {
        return None;
    }
    let found = scan(message);
    found.clean.then_some(Clean { eight_bit: found.eight_bit })
}

/// Whether `bytes` are exactly the lines an armed write waits for (`armed-write` in
/// `wit/session.wit`): `lines.len()` lines, each ending with CRLF and holding no other CR or
/// LF, each at most `max_line` bytes (CRLF included), line k starting with `lines[k]`. The host
/// decides with this whether to perform the write; the component's tests use the same rules.
pub fn armed_lines_match<L: AsRef<[u8]>>(bytes: &[u8], lines: &[L], max_line: usize) -> bool {
    let mut rest = bytes;
    for start in lines {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else { return false };
        let line = &rest[..lf + 1];
        if lf == 0 || line[lf - 1] != b'\r' || line.len() > max_line || !line.starts_with(start.as_ref()) {
            return false;
        }
        if line[..lf - 1].contains(&b'\r') {
            return false;
        }
        rest = &rest[lf + 1..];
    }
    rest.is_empty()
}

/// Padding for partial blocks: none of NUL, CR, LF, '.', and ASCII.
const FILL: u8 = b'x';

/// Not clean; the first NUL is searched from `from` on (the bytes before it had none).
fn unclean(message: &[u8], from: usize) -> Scan {
    Scan { nul: message[from..].iter().position(|&b| b == 0).map(|i| i + from), clean: false, eight_bit: false }
}


/// One implementation of the lane logic: the rules broken so far and every byte ORed together.
trait Lanes {
    fn new() -> Self;
    /// The block `cur` with `prev` (the byte before each of `cur`'s).
    fn block(&mut self, cur: &[u8; 16], prev: &[u8; 16]);
    /// The block at `message[at..at + 16]` with `message[at - 1..at + 15]`.
    fn block_at(&mut self, message: &[u8], at: usize);
    /// A rule was broken in some lane.
    fn bad(&self) -> bool;
    /// Some byte is above 0x7F.
    fn high(&self) -> bool;
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod native {
    use core::arch::wasm32::*;

    pub(super) struct Acc {
        bad: v128,
        all: v128,
    }

    impl Acc {
        #[inline(always)]
        fn lanes(&mut self, cur: v128, prev: v128) {
            let lf = u8x16_eq(cur, u8x16_splat(b'\n'));
            let after_cr = u8x16_eq(prev, u8x16_splat(b'\r'));
            let dot = u8x16_eq(cur, u8x16_splat(b'.'));
            let after_lf = u8x16_eq(prev, u8x16_splat(b'\n'));
            let nul = u8x16_eq(cur, u8x16_splat(0));
            self.bad = v128_or(self.bad, v128_or(v128_xor(lf, after_cr), v128_or(v128_and(dot, after_lf), nul)));
            self.all = v128_or(self.all, cur);
        }
    }

    impl super::Lanes for Acc {
        fn new() -> Self {
            Acc { bad: u8x16_splat(0), all: u8x16_splat(0) }
        }

        #[inline(always)]
        fn block(&mut self, cur: &[u8; 16], prev: &[u8; 16]) {
            // SAFETY: both are 16 readable bytes; v128_load has no alignment requirement.
            let (c, p) = unsafe { (v128_load(cur.as_ptr().cast()), v128_load(prev.as_ptr().cast())) };
            self.lanes(c, p);
        }

        #[inline(always)]
        fn block_at(&mut self, message: &[u8], at: usize) {
            let bytes = &message[at - 1..at + 16];
            // SAFETY: `bytes` is 17 readable bytes (bounds checked above); unaligned loads
            // of 16 bytes at offsets 0 and 1.
            let (p, c) = unsafe { (v128_load(bytes.as_ptr().cast()), v128_load(bytes.as_ptr().add(1).cast())) };
            self.lanes(c, p);
        }

        #[inline(always)]
        fn bad(&self) -> bool {
            v128_any_true(self.bad)
        }

        fn high(&self) -> bool {
            u8x16_bitmask(self.all) != 0
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    // SSE2 is part of x86_64: these intrinsics exist on every x86_64 CPU.
    use core::arch::x86_64::*;

    pub(super) struct Acc {
        bad: __m128i,
        all: __m128i,
    }

    impl Acc {
        #[inline(always)]
        fn lanes(&mut self, cur: __m128i, prev: __m128i) {
            // SAFETY: SSE2 arithmetic on values; no memory is touched.
            unsafe {
                let lf = _mm_cmpeq_epi8(cur, _mm_set1_epi8(b'\n' as i8));
                let after_cr = _mm_cmpeq_epi8(prev, _mm_set1_epi8(b'\r' as i8));
                let dot = _mm_cmpeq_epi8(cur, _mm_set1_epi8(b'.' as i8));
                let after_lf = _mm_cmpeq_epi8(prev, _mm_set1_epi8(b'\n' as i8));
                let nul = _mm_cmpeq_epi8(cur, _mm_setzero_si128());
                let rules = _mm_or_si128(_mm_xor_si128(lf, after_cr), _mm_or_si128(_mm_and_si128(dot, after_lf), nul));
                self.bad = _mm_or_si128(self.bad, rules);
                self.all = _mm_or_si128(self.all, cur);
            }
        }
    }

    impl super::Lanes for Acc {
        fn new() -> Self {
            // SAFETY: SSE2 constants.
            unsafe { Acc { bad: _mm_setzero_si128(), all: _mm_setzero_si128() } }
        }

        #[inline(always)]
        fn block(&mut self, cur: &[u8; 16], prev: &[u8; 16]) {
            // SAFETY: both are 16 readable bytes; _mm_loadu_si128 has no alignment requirement.
            let (c, p) = unsafe { (_mm_loadu_si128(cur.as_ptr().cast()), _mm_loadu_si128(prev.as_ptr().cast())) };
            self.lanes(c, p);
        }

        #[inline(always)]
        fn block_at(&mut self, message: &[u8], at: usize) {
            let bytes = &message[at - 1..at + 16];
            // SAFETY: `bytes` is 17 readable bytes (bounds checked above); unaligned loads of
            // 16 bytes at offsets 0 and 1.
            let (p, c) = unsafe { (_mm_loadu_si128(bytes.as_ptr().cast()), _mm_loadu_si128(bytes.as_ptr().add(1).cast())) };
            self.lanes(c, p);
        }

        #[inline(always)]
        fn bad(&self) -> bool {
            // SAFETY: SSE2 on a value.
            unsafe { _mm_movemask_epi8(self.bad) != 0 }
        }

        fn high(&self) -> bool {
            // SAFETY: SSE2 on a value.
            unsafe { _mm_movemask_epi8(self.all) != 0 }
        }
    }
}

#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
use swar as native;

/// Two u64 words per block: the lane logic without vector instructions.
#[cfg_attr(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"), allow(dead_code))]
mod swar {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

    /// 0x80 in each byte of `x` that equals `b`, 0 elsewhere (exact: no carries between bytes).
    #[inline(always)]
    fn eq(x: u64, b: u8) -> u64 {
        let y = x ^ (ONES * b as u64);
        !(((y & LOW7) + LOW7) | y | LOW7)
    }

    pub(super) struct Acc {
        bad: u64,
        all: u64,
    }

    impl Acc {
        #[inline(always)]
        fn word(&mut self, cur: u64, prev: u64) {
            let rules = (eq(cur, b'\n') ^ eq(prev, b'\r')) | (eq(cur, b'.') & eq(prev, b'\n')) | eq(cur, 0);
            self.bad |= rules;
            self.all |= cur;
        }
    }

    impl super::Lanes for Acc {
        fn new() -> Self {
            Acc { bad: 0, all: 0 }
        }

        fn block(&mut self, cur: &[u8; 16], prev: &[u8; 16]) {
            for h in 0..2 {
                let c = u64::from_le_bytes(cur[h * 8..h * 8 + 8].try_into().expect("8 bytes"));
                let p = u64::from_le_bytes(prev[h * 8..h * 8 + 8].try_into().expect("8 bytes"));
                self.word(c, p);
            }
        }

        fn block_at(&mut self, message: &[u8], at: usize) {
            let bytes: &[u8; 17] = message[at - 1..at + 16].try_into().expect("17 bytes");
            for h in 0..2 {
                let p = u64::from_le_bytes(bytes[h * 8..h * 8 + 8].try_into().expect("8 bytes"));
                let c = u64::from_le_bytes(bytes[h * 8 + 1..h * 8 + 9].try_into().expect("8 bytes"));
                self.word(c, p);
            }
        }

        fn bad(&self) -> bool {
            self.bad != 0
        }

        fn high(&self) -> bool {
            self.all & 0x8080_8080_8080_8080 != 0
        }
    }
}

/// Messages for tests of whatever handles these bytes (the component's encoders use them too;
/// feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    extern crate alloc;
    use alloc::vec::Vec;

    /// xorshift64*: a fixed seed, so a failure names the same inputs on every run.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
        }
    }

    /// Calls `check` with 40,000 seeded messages (mostly CRLF text with a rare dot, CR, LF, NUL
    /// or 8-bit byte, at lengths around every block border (16) and group border (64)), then
    /// with a clean message crossing several groups and each rule broken at every position.
    pub fn samples(mut check: impl FnMut(&[u8])) {
        let mut rng = Rng(0x6d61_696c_706c_7567);
        for round in 0..40_000 {
            let len = match round % 4 {
                0 => rng.below(40),
                1 => 16 * rng.below(12) + rng.below(3),
                2 => 64 * rng.below(5) + rng.below(34),
                _ => rng.below(700),
            };
            let rare = 1 + rng.below(60);
            let mut m = Vec::with_capacity(len);
            while m.len() < len {
                let r = rng.below(rare * 8);
                match r {
                    0 => m.push(b'.'),
                    1 => m.push(b'\r'),
                    2 => m.push(b'\n'),
                    3 if rng.below(8) == 0 => m.push(0),
                    4 if rng.below(4) == 0 => m.push(0xC3),
                    5..=9 => m.extend_from_slice(b"\r\n"),
                    10 => m.extend_from_slice(b"\r\n."),
                    _ => m.push(b'a' + (r % 26) as u8),
                }
            }
            m.truncate(len);
            check(&m);
        }
        let base: Vec<u8> = b"Line of text.\r\n".iter().copied().cycle().take(200).collect();
        check(&base);
        for at in 0..base.len() {
            for bad in [&b"\0"[..], b"\r", b"\n", b".", b"\r\n.", b"\xE9"] {
                let mut m = base.clone();
                m.splice(at..at, bad.iter().copied());
                check(&m);
                m.truncate(at + bad.len());
                check(&m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    /// The rules, byte by byte: the reference every implementation is compared with.
    fn reference(message: &[u8]) -> Scan {
        let nul = message.iter().position(|&b| b == 0);
        let clean = nul.is_none()
            && message.first() != Some(&b'.')
            && message.iter().enumerate().all(|(i, &b)| match b {
                b'\r' => message.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && message[i - 1] == b'\r' && message.get(i + 1) != Some(&b'.'),
                _ => true,
            });
        Scan { nul, clean, eight_bit: clean && !message.is_ascii() }
    }

    fn check(m: &[u8]) {
        let want = reference(m);
        assert_eq!(scan(m), want, "native: {:?}", String::from_utf8_lossy(m));
        assert_eq!(scan_with::<swar::Acc>(m), want, "swar: {:?}", String::from_utf8_lossy(m));
        let ok = want.clean && m.ends_with(b"\r\n");
        assert_eq!(clean_for_data(m), ok.then_some(Clean { eight_bit: want.eight_bit }));
    }

    #[test]
    fn every_implementation_agrees_with_the_rules_on_random_messages() {
        testing::samples(check);
    }

    #[test]
    fn the_first_nul_is_found_whether_or_not_the_message_is_clean() {
        let unclean = |nul| Scan { nul: Some(nul), clean: false, eight_bit: false };
        assert_eq!(scan(b"a\r\nb\0c\0"), unclean(4));
        assert_eq!(scan(b"\0"), unclean(0));
        // Not clean before the NUL: the rest is still searched.
        assert_eq!(scan(b"a\nb\r\nc\0"), unclean(6));
        assert_eq!(scan(b".a\r\n\0"), unclean(4));
        assert_eq!(scan(b"a\r\n.b\0"), unclean(5));
        let long = [&b"x\n"[..], &[b'y'; 300], b"\0"].concat();
        assert_eq!(scan(&long), unclean(302));
        assert_eq!(scan(b"a\r\nb\r\n"), Scan { nul: None, clean: true, eight_bit: false });
        assert_eq!(scan("a\r\n\u{e9}".as_bytes()), Scan { nul: None, clean: true, eight_bit: true });
        assert_eq!(scan(b"a\r\nb\r"), Scan { nul: None, clean: false, eight_bit: false });
        assert_eq!(scan(b""), Scan { nul: None, clean: true, eight_bit: false });
    }

    #[test]
    fn only_clean_messages_ending_with_crlf_may_skip_the_component() {
        assert_eq!(clean_for_data(b"Subject: x\r\n\r\nbody\r\n"), Some(Clean { eight_bit: false }));
        assert_eq!(clean_for_data("Subject: x\r\n\r\nGr\u{fc}\u{df}e\r\n".as_bytes()), Some(Clean { eight_bit: true }));
        for not in [&b""[..], b"body", b"body\r", b"a\r\n.\r\n", b"a\nb\r\n", b".\r\n", b"a\0\r\n", b"a\rb\r\n"] {
            assert_eq!(clean_for_data(not), None, "{:?}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn an_armed_write_matches_exactly_its_lines_and_nothing_else() {
        let lines = ["250 ", "250 ", "250 ", "354 "];
        let good = b"250 2.0.0 Ok: queued as 1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n";
        assert!(armed_lines_match(good, &lines, 512));
        assert!(armed_lines_match(b"354 go\r\n", &["354 "], 512));
        assert!(armed_lines_match(b"", &[] as &[&str], 512), "no line waited for, none came");
        let no: [&[u8]; 11] = [
            b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",               // a line short (a split read)
            b"250 a\r\n250 b\r\n250 c\r\n354 d\r\n250 e\r\n",             // a line more
            b"250 a\r\n250 b\r\n250 c\r\n354 d",                         // no line end
            b"250 a\r\n250 b\r\n250 c\r\n354 d\n",                       // LF alone
            b"250 a\n250 b\r\n250 c\r\n354 d\r\n",                       // LF alone inside
            b"250 a\rb\r\n250 b\r\n250 c\r\n354 d\r\n",                  // CR alone
            b"250-a\r\n250 b\r\n250 c\r\n354 d\r\n",                     // a multi-line reply
            b"250 a\r\n550 b\r\n250 c\r\n354 d\r\n",                     // a refusal
            b"250 a\r\n250 b\r\n250 c\r\n554 d\r\n",                     // DATA refused
            b"250 a\r\n250 b\r\n250 c\r\n\r\n",                          // an empty line
            b"\r\n250 a\r\n250 b\r\n354 d\r\n",                          // an empty line first
        ];
        for bytes in no {
            assert!(!armed_lines_match(bytes, &lines, 512), "{:?}", String::from_utf8_lossy(bytes));
        }
        // The line limit counts the CRLF.
        assert!(armed_lines_match(b"354 12\r\n", &["354 "], 8));
        assert!(!armed_lines_match(b"354 123\r\n", &["354 "], 8));
    }
}
