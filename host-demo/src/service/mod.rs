//! `mailplug serve`: the always-on service (docs/SERVE-PLAN.md).

pub mod webhook;
