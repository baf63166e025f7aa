//! POP3 inbound client (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH), sans-IO.
//!
//! Fetches new messages (by UIDL, remembered in the sync state). The first-sync policy decides
//! what of an existing mailbox is fetched; messages too large for the limits are reported once
//! and left alone; with after-fetch `Delete`, messages are deleted only after the host confirmed
//! it stored them, and the deletion is committed by a successful QUIT.

mod client;
pub(crate) mod response;
mod sync;

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;

pub use client::Pop3Session;
