//! mailplug demo host: loads the mailplug component with wasmtime and gives it network,
//! TLS, time, storage and secrets. It holds no protocol knowledge: the guest decides every
//! byte; the host moves them.

pub mod error;
pub mod ops;
pub mod runtime;
pub mod service;
pub mod store;
pub mod tenant;

// The former flat module paths, so `mailplug_host::config::...` and friends keep working.
pub use ops::{check, discovery};
pub use runtime::{driver, http, net};
pub use store::private_files;
pub use store::sqlite as db;
pub use tenant::{config, oauth, secret, tokens};

pub use config::TenantConfig;
/// The runtime under its former name, so `engine::...` paths keep working.
pub use runtime as engine;
pub use runtime::{Plugin, RuntimeOptions};
pub use error::{HostError, Kind, Retry};
