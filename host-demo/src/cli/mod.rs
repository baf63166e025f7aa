//! The `mailplug` command line, one module per command group.

pub mod args;
pub mod check;
pub mod discover;
pub mod enqueue;
pub mod fetch;
pub mod oauth;
pub mod outbox;
pub mod output;
pub mod send;
pub mod send_batch;
pub mod serve;
pub mod store;
