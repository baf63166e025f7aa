//! The allow-list: a session only ever connects to a server the tenant configured, with at
//! least the configured security.

use super::*;

/// One server the tenant configured: host, port and the security it must be reached with.
pub type AllowedServer = (String, u16, GuestSecurity);

/// How strong a security mode is: implicit TLS > STARTTLS > plaintext.
pub(super) fn strength(s: GuestSecurity) -> u8 {
    match s {
        GuestSecurity::ImplicitTls => 2,
        GuestSecurity::Starttls => 1,
        GuestSecurity::InsecurePlaintext => 0,
    }
}

/// Whether the tenant configured `server`: its host and port, with security at least as
/// strong as every entry configured for that host and port. The guest's `server()` is not
/// trusted to carry the configured security.
pub fn is_allowed(allowed: &[AllowedServer], server: &GuestServer) -> Result<(), HostError> {
    let label = format!("{}:{}", server.host, server.port);
    let mut matching = allowed.iter().filter(|(h, p, _)| h.eq_ignore_ascii_case(&server.host) && *p == server.port).peekable();
    if matching.peek().is_none() {
        return Err(HostError::NotAllowed(label));
    }
    if let Some((_, _, configured)) = matching.find(|(_, _, c)| strength(server.security) < strength(*c)) {
        return Err(HostError::WeakerSecurity {
            server: label,
            configured: security_name(*configured),
            asked: security_name(server.security),
        });
    }
    Ok(())
}

pub(super) fn security_name(s: GuestSecurity) -> &'static str {
    match s {
        GuestSecurity::ImplicitTls => "implicit TLS",
        GuestSecurity::Starttls => "STARTTLS",
        GuestSecurity::InsecurePlaintext => "no TLS (insecure plaintext)",
    }
}

/// The session's server, when it is one the tenant configured; nothing else is connected to.
pub(super) async fn allowed_server(
    instance: &mut Instance,
    session: SessionHandle,
    opts: &DriveOptions<'_>,
) -> Result<crate::engine::GuestServer, HostError> {
    let server = instance.server(session).await?;
    is_allowed(opts.allowed, &server)?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16, security: GuestSecurity) -> GuestServer {
        GuestServer { host: host.into(), port, security }
    }

    #[test]
    fn the_allow_list_enforces_the_configured_security() {
        use GuestSecurity::*;
        let allowed: Vec<AllowedServer> = vec![("imap.example.test".into(), 993, ImplicitTls), ("smtp.example.test".into(), 587, Starttls)];
        assert!(is_allowed(&allowed, &server("IMAP.example.test", 993, ImplicitTls)).is_ok());
        assert!(is_allowed(&allowed, &server("smtp.example.test", 587, Starttls)).is_ok());
        // Stronger than configured cannot leak anything.
        assert!(is_allowed(&allowed, &server("smtp.example.test", 587, ImplicitTls)).is_ok());
        for (host, port, asked) in [
            ("imap.example.test", 993, Starttls),
            ("imap.example.test", 993, InsecurePlaintext),
            ("smtp.example.test", 587, InsecurePlaintext),
        ] {
            let e = is_allowed(&allowed, &server(host, port, asked)).unwrap_err();
            assert!(matches!(e, HostError::WeakerSecurity { .. }), "{e}");
            assert!(e.to_string().contains("the tenant configured"), "{e}");
        }
        assert!(matches!(is_allowed(&allowed, &server("evil.test", 993, ImplicitTls)), Err(HostError::NotAllowed(_))));
        assert!(matches!(is_allowed(&allowed, &server("imap.example.test", 143, ImplicitTls)), Err(HostError::NotAllowed(_))));
        // The same host and port configured twice: the strongest entry decides.
        let twice: Vec<AllowedServer> = vec![("h".into(), 1, InsecurePlaintext), ("h".into(), 1, ImplicitTls)];
        assert!(is_allowed(&twice, &server("h", 1, Starttls)).is_err());
    }
}
