//! POP3 inbound client (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH), sans-IO.
//!
//! Fetches new messages (by UIDL, remembered in the sync state) without ever deleting any.

mod client;
mod response;
mod sync;

#[cfg(test)]
mod tests;

pub use client::Pop3Session;
