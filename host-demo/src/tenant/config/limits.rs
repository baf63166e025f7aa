//! `[limits]`: the bounds the host enforces and hands to the component, their defaults and
//! their validation.

use super::raw::RawLimits;

/// The re-IDLE timer when the file sets none: 25 minutes.
pub const DEFAULT_IDLE_RENEW_SECS: u32 = 1500;
/// RFC 2177: servers may end an IDLE after 30 minutes without activity; clients re-issue it
/// at least every 29.
pub const MAX_IDLE_RENEW_SECS: u32 = 29 * 60;

/// The greeting timeout when the file sets none (or the reply timeout, when that is shorter).
pub const DEFAULT_GREETING_TIMEOUT_SECS: u32 = 10;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line_bytes: u32,
    pub max_message_bytes: u64,
    pub max_batch_messages: u32,
    pub max_batch_bytes: u64,
    pub reply_timeout_secs: u32,
    /// The longest the host waits for a server's first line (its greeting) after connecting,
    /// or after the handshake with implicit TLS. Short, because a server that says nothing
    /// usually waits for a TLS handshake (the TLS switch is off for a TLS port); at most
    /// `reply_timeout_secs`.
    pub greeting_timeout_secs: u32,
    pub connect_timeout_secs: u32,
    pub guest_memory_mb: u32,
    pub guest_cpu_ms_per_call: u32,
    /// Memory of the instance that parses delivered messages, in MB. A message that needs
    /// more is stored unparsed and flagged; the session goes on.
    pub parse_memory_mb: u32,
    /// CPU time to parse one message, in ms; past it the message is stored unparsed and flagged.
    pub parse_cpu_ms: u32,
    /// The longest a session (fetch, send, check, saving a copy) may take, connecting
    /// included; the host ends it after that. What was stored before stays stored.
    pub max_session_secs: u32,
    /// IMAP IDLE: how long an idling mailbox waits without news before the host has its
    /// session end IDLE and start it again (1 to 1740 s; RFC 2177 asks for less than 29
    /// minutes). Not part of `max_session_secs`: that bounds each run after a wake-up.
    pub idle_renew_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_message_bytes: 50 * 1024 * 1024,
            max_batch_messages: 500,
            max_batch_bytes: 200 * 1024 * 1024,
            reply_timeout_secs: 60,
            greeting_timeout_secs: DEFAULT_GREETING_TIMEOUT_SECS,
            connect_timeout_secs: 20,
            guest_memory_mb: 256,
            guest_cpu_ms_per_call: 2000,
            parse_memory_mb: 256,
            parse_cpu_ms: 10_000,
            max_session_secs: 15 * 60,
            idle_renew_secs: DEFAULT_IDLE_RENEW_SECS,
        }
    }
}

/// The limits the file sets, the defaults for the others; an error names the field.
pub(super) fn limits(l: &RawLimits) -> Result<Limits, String> {
    let d = Limits::default();
    let reply_timeout_secs = l.reply_timeout_secs.unwrap_or(d.reply_timeout_secs);
    let limits = Limits {
        max_line_bytes: l.max_line_bytes.unwrap_or(d.max_line_bytes),
        max_message_bytes: l.max_message_bytes.unwrap_or(d.max_message_bytes),
        max_batch_messages: l.max_batch_messages.unwrap_or(d.max_batch_messages),
        max_batch_bytes: l.max_batch_bytes.unwrap_or(d.max_batch_bytes),
        reply_timeout_secs,
        greeting_timeout_secs: l.greeting_timeout_secs.unwrap_or(d.greeting_timeout_secs.min(reply_timeout_secs)),
        connect_timeout_secs: l.connect_timeout_secs.unwrap_or(d.connect_timeout_secs),
        guest_memory_mb: l.guest_memory_mb.unwrap_or(d.guest_memory_mb),
        guest_cpu_ms_per_call: l.guest_cpu_ms_per_call.unwrap_or(d.guest_cpu_ms_per_call),
        parse_memory_mb: l.parse_memory_mb.unwrap_or(d.parse_memory_mb),
        parse_cpu_ms: l.parse_cpu_ms.unwrap_or(d.parse_cpu_ms),
        max_session_secs: l.max_session_secs.unwrap_or(d.max_session_secs),
        idle_renew_secs: l.idle_renew_secs.unwrap_or(d.idle_renew_secs),
    };
    for (field, value, min) in [
        ("limits.max_line_bytes", u64::from(limits.max_line_bytes), 1000),
        ("limits.max_message_bytes", limits.max_message_bytes, 1024),
        ("limits.max_batch_messages", u64::from(limits.max_batch_messages), 1),
        ("limits.max_batch_bytes", limits.max_batch_bytes, 1024),
        ("limits.reply_timeout_secs", u64::from(limits.reply_timeout_secs), 1),
        ("limits.greeting_timeout_secs", u64::from(limits.greeting_timeout_secs), 1),
        ("limits.connect_timeout_secs", u64::from(limits.connect_timeout_secs), 1),
        ("limits.guest_memory_mb", u64::from(limits.guest_memory_mb), 16),
        ("limits.guest_cpu_ms_per_call", u64::from(limits.guest_cpu_ms_per_call), 10),
        ("limits.parse_memory_mb", u64::from(limits.parse_memory_mb), 16),
        ("limits.parse_cpu_ms", u64::from(limits.parse_cpu_ms), 10),
        ("limits.max_session_secs", u64::from(limits.max_session_secs), 1),
        ("limits.idle_renew_secs", u64::from(limits.idle_renew_secs), 1),
    ] {
        if value < min {
            return Err(format!("field `{field}` is {value}; it must be at least {min}"));
        }
    }
    if limits.idle_renew_secs > MAX_IDLE_RENEW_SECS {
        return Err(format!(
            "field `limits.idle_renew_secs` is {}; it must be at most {MAX_IDLE_RENEW_SECS} (29 minutes): servers may end an IDLE after 30 minutes (RFC 2177)",
            limits.idle_renew_secs
        ));
    }
    if limits.greeting_timeout_secs > limits.reply_timeout_secs {
        return Err(format!(
            "field `limits.greeting_timeout_secs` is {}; it must not be longer than `limits.reply_timeout_secs` ({}): the greeting is the first reply",
            limits.greeting_timeout_secs, limits.reply_timeout_secs
        ));
    }
    Ok(limits)
}
