//! Leases in `mailplug serve` on PostgreSQL (docs/SCALING.md): several nodes share the tenants'
//! mailboxes, queues and webhooks; each is worked on by the one node holding its lease.

pub mod plan;
