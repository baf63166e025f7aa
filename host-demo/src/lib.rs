//! mailplug demo host: loads the mailplug component with wasmtime and gives it network,
//! TLS, time, storage and secrets. It holds no protocol knowledge: the guest decides every
//! byte; the host moves them.

pub mod check;
pub mod config;
pub mod db;
pub mod discovery;
pub mod driver;
pub mod error;
pub mod http;
pub mod net;
pub mod oauth;
pub mod ops;
pub mod private_files;
pub mod runtime;
pub mod secret;
pub mod store;
pub mod tokens;

pub use config::TenantConfig;
/// The runtime under its former name, so `engine::...` paths keep working.
pub use runtime as engine;
pub use runtime::{Plugin, RuntimeOptions};
pub use error::{HostError, Kind, Retry};
