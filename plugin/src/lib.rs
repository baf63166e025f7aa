//! mailplug guest: sans-IO POP3, IMAP and SMTP clients.
//!
//! Bytes and the current time come in as values; bytes to write and actions go out. The
//! protocol cores are plain Rust modules with native unit tests; `component` is the thin
//! wit-bindgen glue that exists only in the wasm32 build.

pub mod config;
pub mod error;
pub mod link;
pub mod session;
pub mod sasl;
pub mod pop3;
pub mod imap;
pub mod smtp;
pub mod compose;
pub mod headers;
pub mod parse;
pub mod plan;
pub mod oauth;
pub mod presets;
pub mod discover;
pub mod diagnose;
#[doc(hidden)]
pub mod fuzzing;

#[cfg(target_family = "wasm")]
mod component;
#[cfg(target_family = "wasm")]
mod component_discover;
