//! SMTP submission client (RFC 5321, 6409, 3207 STARTTLS, 4954 AUTH, 2920 PIPELINING, 1870 SIZE).
//!
//! Replies and EHLO keywords are parsed by hand rather than with `smtp-proto`: `Link` already
//! yields bounded lines without re-scanning, and what is left (3-digit code, '-' or ' ',
//! enhanced status code, a few keywords) is smaller than adapting another parser's buffering
//! and error types, and keeps the limits (line length, lines per reply) in one place.

mod client;
mod data;
pub mod explain;
pub(crate) mod reply;

pub use client::{BatchEnvelope, SmtpSession, MAX_BATCH};
pub use data::encode_data;
pub use explain::{explain, explain_error, Explanation};

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;
