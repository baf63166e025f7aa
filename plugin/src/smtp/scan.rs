//! One look at a message's bytes before DATA: does it need any change on the wire?
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
//! In the component (wasm32 with `simd128`, enabled for the guest in .cargo/config.toml) the
//! blocks are wasm SIMD vectors; elsewhere (native unit tests) two u64 words per block with
//! the same lane logic. Before, `memchr3` over NUL/CR/LF stopped at every line end (about 100
//! instructions of set-up per stop, 275 stops per 10 KB message).

/// What one look at a message's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
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
pub(crate) fn scan(message: &[u8]) -> Scan {
    let n = message.len();
    let mut acc = Acc::new();
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

/// Padding for partial blocks: none of NUL, CR, LF, '.', and ASCII.
const FILL: u8 = b'x';

/// Not clean; the first NUL is searched from `from` on (the bytes before it had none).
fn unclean(message: &[u8], from: usize) -> Scan {
    Scan { nul: memchr::memchr(0, &message[from..]).map(|i| i + from), clean: false, eight_bit: false }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::*;

    /// The lanes that broke a rule, and every byte ORed together.
    pub(super) struct Acc {
        bad: v128,
        all: v128,
    }

    impl Acc {
        pub(super) fn new() -> Self {
            Acc { bad: u8x16_splat(0), all: u8x16_splat(0) }
        }

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

        #[inline(always)]
        pub(super) fn block(&mut self, cur: &[u8; 16], prev: &[u8; 16]) {
            // SAFETY: both are 16 readable bytes; v128_load has no alignment requirement.
            let (c, p) = unsafe { (v128_load(cur.as_ptr().cast()), v128_load(prev.as_ptr().cast())) };
            self.lanes(c, p);
        }

        /// The block at `message[at..at + 16]` with `message[at - 1..at + 15]`.
        #[inline(always)]
        pub(super) fn block_at(&mut self, message: &[u8], at: usize) {
            let bytes = &message[at - 1..at + 16];
            // SAFETY: `bytes` is 17 readable bytes (bounds checked above); unaligned loads
            // of 16 bytes at offsets 0 and 1.
            let (p, c) = unsafe { (v128_load(bytes.as_ptr().cast()), v128_load(bytes.as_ptr().add(1).cast())) };
            self.lanes(c, p);
        }

        #[inline(always)]
        pub(super) fn bad(&self) -> bool {
            v128_any_true(self.bad)
        }

        pub(super) fn high(&self) -> bool {
            u8x16_bitmask(self.all) != 0
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

    /// 0x80 in each byte of `x` that equals `b`, 0 elsewhere (exact: no carries between bytes).
    #[inline(always)]
    fn eq(x: u64, b: u8) -> u64 {
        let y = x ^ (ONES * b as u64);
        !(((y & LOW7) + LOW7) | y | LOW7)
    }

    /// The lanes that broke a rule (0x80 per byte), and every byte ORed together.
    pub(super) struct Acc {
        bad: u64,
        all: u64,
    }

    impl Acc {
        pub(super) fn new() -> Self {
            Acc { bad: 0, all: 0 }
        }

        #[inline(always)]
        fn word(&mut self, cur: u64, prev: u64) {
            let rules = (eq(cur, b'\n') ^ eq(prev, b'\r')) | (eq(cur, b'.') & eq(prev, b'\n')) | eq(cur, 0);
            self.bad |= rules;
            self.all |= cur;
        }

        pub(super) fn block(&mut self, cur: &[u8; 16], prev: &[u8; 16]) {
            for h in 0..2 {
                let c = u64::from_le_bytes(cur[h * 8..h * 8 + 8].try_into().expect("8 bytes"));
                let p = u64::from_le_bytes(prev[h * 8..h * 8 + 8].try_into().expect("8 bytes"));
                self.word(c, p);
            }
        }

        pub(super) fn block_at(&mut self, message: &[u8], at: usize) {
            let bytes: &[u8; 17] = message[at - 1..at + 16].try_into().expect("17 bytes");
            for h in 0..2 {
                let p = u64::from_le_bytes(bytes[h * 8..h * 8 + 8].try_into().expect("8 bytes"));
                let c = u64::from_le_bytes(bytes[h * 8 + 1..h * 8 + 9].try_into().expect("8 bytes"));
                self.word(c, p);
            }
        }

        pub(super) fn bad(&self) -> bool {
            self.bad != 0
        }

        pub(super) fn high(&self) -> bool {
            self.all & 0x8080_8080_8080_8080 != 0
        }
    }
}

use lanes::Acc;
