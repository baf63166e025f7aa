//! IMAP4rev1 (RFC 3501) fetch client, also fine with IMAP4rev2 (RFC 9051) servers.
//!
//! Why a small parser of our own rather than `imap-codec` 2.0.0-alpha.10: we evaluated it
//! (it builds for wasm32-wasip2). Its `Fragmentizer` frames lines and literals, but keeps its
//! own second input buffer (a `VecDeque` fed byte by byte) next to `Link`'s, bounds a whole
//! response (line text and literals together) by one `u32` size, so an untagged line could grow
//! to the message limit instead of `max_line_bytes`, and `ResponseCodec` borrows from that
//! buffer, so a 50 MB body would be copied three times before delivery. It is also an alpha
//! (imap-types alpha.8 under codec alpha.10) whose API still moves. This client needs a
//! small subset (status responses and codes, CAPABILITY, EXISTS, SEARCH/ESEARCH, FETCH with
//! UID, RFC822.SIZE and BODY[]), so `response::Framer` reads bounded lines from `Link` and
//! takes each literal with `Link::take_exact`: a body is copied once, from the input buffer
//! into the delivered message.

mod client;
mod command;
mod response;
mod sync;
mod utf7;

#[cfg(test)]
mod tests;

pub use client::ImapSession;
pub use utf7::{decode_folder_name, encode_folder_name};
