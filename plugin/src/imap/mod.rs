//! IMAP4rev1 (RFC 3501) fetch client, also fine with IMAP4rev2 (RFC 9051) servers.
//!
//! Why a small parser of our own rather than `imap-codec` 2.0.0-alpha.10 (evaluated; it does
//! build for wasm32-wasip2):
//! - its `Fragmentizer` keeps its own input queue beside `Link`'s, so `Link::begin_starttls`
//!   could not see bytes injected after the STARTTLS OK, and every byte is buffered twice;
//! - it bounds a whole response (line text and literals together) by one `u32` size, and does
//!   not bound the queued bytes of an unfinished line, so untagged lines could not be held to
//!   `max_line_bytes` while bodies get `max_message_bytes`;
//! - `ResponseCodec` borrows from its message buffer: a body is copied into its queue, into its
//!   message buffer, then out again to own it; here it is copied once from `Link`'s buffer
//!   (`take_exact`) into the delivered message;
//! - it is an alpha (imap-types alpha.8 under codec alpha.10) whose API still moves.
//!
//! This client needs a small subset (status responses and codes, CAPABILITY, EXISTS,
//! SEARCH/ESEARCH, FETCH with UID, RFC822.SIZE and BODY[], LIST's delimiter, NAMESPACE),
//! parsed in `response` (NAMESPACE in `namespace`, which also maps folder names into it).

mod append;
mod auth;
mod client;
mod command;
mod connection;
mod idle;
pub(crate) mod namespace;
pub(crate) mod response;
mod sync;
mod untagged;
mod utf7;

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod transcript;

pub use append::AppendSession;
pub use client::ImapSession;
pub use utf7::{decode_folder_name, encode_folder_name};
