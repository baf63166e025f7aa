//! What a tenant brings: its configuration (TOML, validation, limits), its secrets, and its
//! OAuth2 tokens (refresh, the login flow).

pub mod config;
pub mod oauth;
pub mod redirect;
pub mod secret;
pub mod tokens;
