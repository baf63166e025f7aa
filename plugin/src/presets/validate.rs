//! Checks the server settings an admin entered, before anything connects. Each finding names
//! the field and the fix, in English and German. The password is only inspected, never
//! quoted.

use std::fmt;

use super::{also_accepted, by_any_host, by_host, Preset, UsernameForm};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The settings cannot work as entered.
    Error,
    /// The settings may work, but something is likely wrong or unwise.
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// "host", "port", "tls", "auth", "username" or "password".
    pub field: String,
    pub en: String,
    pub de: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Pop3,
    Imap,
    Smtp,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Proto::Pop3 => "POP3",
            Proto::Imap => "IMAP",
            Proto::Smtp => "SMTP",
        }
    }
    /// (implicit TLS port, STARTTLS port)
    fn standard_ports(self) -> (u16, u16) {
        match self {
            Proto::Pop3 => (995, 110),
            Proto::Imap => (993, 143),
            Proto::Smtp => (465, 587),
        }
    }
}

/// One server's settings as entered. `Debug` redacts the password.
#[derive(Clone, Copy)]
pub struct ServerSettings<'a> {
    pub proto: Proto,
    pub host: &'a str,
    pub port: u16,
    /// Implicit TLS; `false` = STARTTLS.
    pub tls: bool,
    pub oauth2: bool,
    /// A password is stored (its value may not be passed in).
    pub has_password: bool,
    pub username: &'a str,
    /// The password, when available, for format checks (Gmail app passwords).
    pub password: Option<&'a str>,
}

impl fmt::Debug for ServerSettings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("proto", &self.proto)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("oauth2", &self.oauth2)
            .field("has_password", &self.has_password)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .finish()
    }
}

/// What a port is for, by IANA assignment.
fn port_role(port: u16) -> Option<(Proto, bool)> {
    match port {
        995 => Some((Proto::Pop3, true)),
        110 => Some((Proto::Pop3, false)),
        993 => Some((Proto::Imap, true)),
        143 => Some((Proto::Imap, false)),
        465 => Some((Proto::Smtp, true)),
        587 | 25 => Some((Proto::Smtp, false)),
        _ => None,
    }
}

fn mode(tls: bool) -> (&'static str, &'static str) {
    if tls {
        ("TLS on", "TLS an")
    } else {
        ("TLS off (STARTTLS)", "TLS aus (STARTTLS)")
    }
}

pub fn validate(s: &ServerSettings) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |severity, field: &str, en: String, de: String| {
        out.push(Finding { severity, field: field.to_string(), en, de })
    };
    let proto = s.proto.label();
    let host = s.host.trim();
    let host_ok = if host.is_empty() {
        push(
            Severity::Error,
            "host",
            format!("The {proto} server name is empty: enter the host name from the provider's help page, e.g. imap.example.com."),
            format!("Der {proto}-Servername ist leer: Tragen Sie den Hostnamen aus der Hilfeseite des Anbieters ein, z. B. imap.example.com."),
        );
        false
    } else if host.contains(|c: char| c.is_whitespace() || matches!(c, '/' | ':' | '@')) {
        push(
            Severity::Error,
            "host",
            format!("The {proto} server name \"{host}\" is not a plain host name: enter only the name (e.g. imap.example.com), without \"imaps://\", a port or a path; the port has its own field."),
            format!("Der {proto}-Servername \"{host}\" ist kein reiner Hostname: Tragen Sie nur den Namen ein (z. B. imap.example.com), ohne \"imaps://\", Port oder Pfad; der Port hat ein eigenes Feld."),
        );
        false
    } else {
        true
    };

    let (tls_port, starttls_port) = s.proto.standard_ports();
    match port_role(s.port) {
        _ if s.port == 0 => push(
            Severity::Error,
            "port",
            format!("The {proto} port is 0: use {tls_port} with TLS on, or {starttls_port} with TLS off (STARTTLS)."),
            format!("Der {proto}-Port ist 0: Verwenden Sie {tls_port} mit TLS an oder {starttls_port} mit TLS aus (STARTTLS)."),
        ),
        Some((other, _)) if other != s.proto => {
            let other = other.label();
            push(
                Severity::Error,
                "port",
                format!("Port {} is the {other} port, but this is the {proto} server: use {tls_port} with TLS on, or {starttls_port} with TLS off (STARTTLS).", s.port),
                format!("Port {} ist der {other}-Port, dies ist aber der {proto}-Server: Verwenden Sie {tls_port} mit TLS an oder {starttls_port} mit TLS aus (STARTTLS).", s.port),
            )
        }
        Some((_, true)) if !s.tls => push(
            Severity::Error,
            "tls",
            format!("Port {} expects TLS from the first byte: turn TLS on, or use port {starttls_port} with TLS off (STARTTLS).", s.port),
            format!("Port {} erwartet TLS ab dem ersten Byte: Schalten Sie TLS ein oder verwenden Sie Port {starttls_port} mit TLS aus (STARTTLS).", s.port),
        ),
        Some((_, false)) if s.tls => push(
            Severity::Error,
            "tls",
            format!("Port {} speaks STARTTLS: turn TLS off (STARTTLS is then used), or use port {tls_port} with TLS on.", s.port),
            format!("Port {} spricht STARTTLS: Schalten Sie TLS aus (dann wird STARTTLS verwendet) oder verwenden Sie Port {tls_port} mit TLS an.", s.port),
        ),
        _ => {}
    }
    if s.proto == Proto::Smtp && s.port == 25 {
        push(
            Severity::Warning,
            "port",
            "Port 25 is for mail between servers and is often blocked or unauthenticated: use 587 with TLS off (STARTTLS), or 465 with TLS on.".to_string(),
            "Port 25 ist für E-Mail zwischen Servern und oft gesperrt oder ohne Anmeldung: Verwenden Sie 587 mit TLS aus (STARTTLS) oder 465 mit TLS an.".to_string(),
        );
    }

    let password_set = s.has_password || s.password.is_some_and(|p| !p.is_empty());
    if s.oauth2 && password_set {
        push(
            Severity::Warning,
            "password",
            format!("OAuth2 is selected for {proto}, so the stored password is not used: delete it, so no password is kept."),
            format!("Für {proto} ist OAuth2 gewählt, das gespeicherte Passwort wird also nicht verwendet: Löschen Sie es, damit kein Passwort gespeichert bleibt."),
        );
    }
    if !s.oauth2 && !password_set {
        push(
            Severity::Error,
            "password",
            format!("Basic sign-in for {proto} needs the mailbox password (or app password): enter it, or choose OAuth2."),
            format!("Die Basic-Anmeldung für {proto} braucht das Postfach-Passwort (oder App-Passwort): Tragen Sie es ein oder wählen Sie OAuth2."),
        );
    }

    let username = s.username.trim();
    if username.is_empty() {
        push(
            Severity::Error,
            "username",
            format!("The {proto} user name is empty: enter the mailbox's login, usually its full e-mail address."),
            format!("Der {proto}-Benutzername ist leer: Tragen Sie die Anmeldung des Postfachs ein, meist die vollständige E-Mail-Adresse."),
        );
    }

    if host_ok {
        match by_host(host, s.proto) {
            Some(preset) => check_against_preset(s, &preset, username, &mut out),
            None => {
                if let Some((preset, used_for)) = by_any_host(host) {
                    wrong_protocol_host(s, host, &preset, used_for, &mut out);
                }
            }
        }
    }
    out
}

fn check_against_preset(s: &ServerSettings, preset: &Preset, username: &str, out: &mut Vec<Finding>) {
    let mut push = |severity, field: &str, en: String, de: String| {
        out.push(Finding { severity, field: field.to_string(), en, de })
    };
    let name = preset.name;
    let proto = s.proto.label();

    if !s.oauth2 && !preset.accepts_password() {
        // Exchange Online still takes Basic SMTP AUTH where the tenant allows it (off by
        // default from the end of 2026); POP and IMAP refuse it outright.
        if preset.id == "microsoft365" && s.proto == Proto::Smtp {
            push(
                Severity::Warning,
                "auth",
                format!("{name} is switching Basic (password) sign-in for SMTP off (off by default for tenants from the end of December 2026): choose OAuth2 for SMTP."),
                format!("{name} schaltet die Basic-Anmeldung (Passwort) für SMTP ab (ab Ende Dezember 2026 für Tenants standardmäßig aus): Wählen Sie OAuth2 für SMTP."),
            );
        } else {
            push(
                Severity::Error,
                "auth",
                format!("{name} no longer accepts Basic (password) sign-in for {proto}: choose OAuth2 as the authentication type and connect the account."),
                format!("{name} akzeptiert für {proto} keine Basic-Anmeldung (Passwort) mehr: Wählen Sie OAuth2 als Authentifizierungstyp und verbinden Sie das Konto."),
            );
        }
    }
    if s.oauth2 && !preset.accepts_oauth2() {
        push(
            Severity::Error,
            "auth",
            format!("{name} offers no OAuth2 sign-in for this product: choose Basic and enter the mailbox password (or app password)."),
            format!("{name} bietet für dieses Produkt keine OAuth2-Anmeldung: Wählen Sie Basic und tragen Sie das Postfach-Passwort (oder App-Passwort) ein."),
        );
    }
    if preset.id == "gmail" && !s.oauth2 {
        if let Some(p) = s.password.filter(|p| !p.is_empty()) {
            if !looks_like_gmail_app_password(p) {
                push(
                    Severity::Warning,
                    "password",
                    "Gmail wants an app password: turn on 2-Step Verification for the Google account, then create an app password (Google account > Security > App passwords) and enter its 16 letters here. The normal Google password is refused.".to_string(),
                    "Gmail verlangt ein App-Passwort: Aktivieren Sie die Bestätigung in zwei Schritten für das Google-Konto, erstellen Sie dann ein App-Passwort (Google-Konto > Sicherheit > App-Passwörter) und tragen Sie seine 16 Buchstaben hier ein. Das normale Google-Passwort wird abgelehnt.".to_string(),
                );
            }
        }
    }

    if !username.is_empty() {
        match preset.username {
            UsernameForm::FullAddress if !username.contains('@') => push(
                Severity::Error,
                "username",
                format!("{name} needs the full e-mail address as user name (e.g. {username}@{}), not just \"{username}\".", example_domain(preset)),
                format!("{name} braucht die vollständige E-Mail-Adresse als Benutzernamen (z. B. {username}@{}), nicht nur \"{username}\".", example_domain(preset)),
            ),
            UsernameForm::LocalPart if username.contains('@') => {
                let local = username.split('@').next().unwrap_or(username);
                push(
                    Severity::Warning,
                    "username",
                    format!("{name} usually wants only the part before the @ as user name (\"{local}\"), not the full address."),
                    format!("{name} erwartet als Benutzernamen meist nur den Teil vor dem @ (\"{local}\"), nicht die vollständige Adresse."),
                )
            }
            _ => {}
        }
    }

    if let Some(server) = preset.server(s.proto) {
        let known = s.port == server.port || also_accepted(preset.id, s.proto).iter().any(|&(p, _)| p == s.port);
        if !known && s.port != 0 {
            let (en_mode, de_mode) = mode(server.tls);
            push(
                Severity::Warning,
                "port",
                format!("{} ({name}) is not known to use port {}: use port {} with {en_mode}.", server.host, s.port, server.port),
                format!("{} ({name}) verwendet Port {} nicht: Verwenden Sie Port {} mit {de_mode}.", server.host, s.port, server.port),
            );
        }
    }
}

/// The host belongs to a preset, but to another protocol (e.g. imap.gmail.com entered as the
/// POP3 server).
fn wrong_protocol_host(s: &ServerSettings, host: &str, preset: &Preset, used_for: Proto, out: &mut Vec<Finding>) {
    let name = preset.name;
    let host_lc = host.trim_end_matches('.').to_ascii_lowercase();
    // Every protocol this host serves at the provider, e.g. "POP3/IMAP".
    let served: Vec<&str> = [Proto::Pop3, Proto::Imap, Proto::Smtp]
        .into_iter()
        .filter(|&p| preset.server(p).is_some_and(|srv| srv.host == host_lc))
        .map(Proto::label)
        .collect();
    let other = if served.is_empty() { used_for.label().to_string() } else { served.join("/") };
    let proto = s.proto.label();
    let finding = match preset.server(s.proto) {
        Some(right) => {
            let (en_mode, de_mode) = mode(right.tls);
            Finding {
                severity: Severity::Warning,
                field: "host".into(),
                en: format!("{host} is the {other} server of {name}; for {proto} use {} port {} with {en_mode}.", right.host, right.port),
                de: format!("{host} ist der {other}-Server von {name}; für {proto} verwenden Sie {} Port {} mit {de_mode}.", right.host, right.port),
            }
        }
        None => Finding {
            severity: Severity::Error,
            field: "host".into(),
            en: format!("{name} offers no {proto} access ({host} is its {other} server): use another protocol for this mailbox."),
            de: format!("{name} bietet keinen {proto}-Zugang ({host} ist sein {other}-Server): Verwenden Sie ein anderes Protokoll für dieses Postfach."),
        },
    };
    out.push(finding);
}

fn example_domain(preset: &Preset) -> &'static str {
    preset.domains.first().copied().unwrap_or("example.com")
}

/// Google shows app passwords as four groups of four lower-case letters ("abcd efgh ijkl
/// mnop"); both that and the 16 letters without spaces are accepted.
pub fn looks_like_gmail_app_password(p: &str) -> bool {
    let groups: Vec<&str> = p.split(char::is_whitespace).filter(|g| !g.is_empty()).collect();
    let lower = |g: &&str| g.bytes().all(|b| b.is_ascii_lowercase());
    match groups.as_slice() {
        [one] => one.len() == 16 && lower(one),
        four @ [_, _, _, _] => four.iter().all(|g| g.len() == 4 && lower(g)),
        _ => false,
    }
}

/// Gmail app passwords are shown with spaces ("abcd efgh ijkl mnop"): strip them. Only a
/// password that is 16 ASCII letters once whitespace is removed is changed; any other
/// password is returned as is, since spaces may be part of it.
pub fn normalise_app_password(p: &str) -> String {
    let stripped: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    if stripped.len() == 16 && stripped.bytes().all(|b| b.is_ascii_alphabetic()) {
        stripped
    } else {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_PASSWORD: &str = "abcd efgh ijkl mnop";

    fn basic<'a>(proto: Proto, host: &'a str, port: u16, tls: bool, username: &'a str, password: &'a str) -> ServerSettings<'a> {
        ServerSettings { proto, host, port, tls, oauth2: false, has_password: true, username, password: Some(password) }
    }

    fn oauth<'a>(proto: Proto, host: &'a str, port: u16, tls: bool, username: &'a str) -> ServerSettings<'a> {
        ServerSettings { proto, host, port, tls, oauth2: true, has_password: false, username, password: None }
    }

    fn on(findings: &[Finding], field: &str) -> Vec<Finding> {
        findings.iter().filter(|f| f.field == field).cloned().collect()
    }

    fn assert_bilingual(findings: &[Finding]) {
        for f in findings {
            assert!(!f.en.is_empty() && !f.de.is_empty() && f.en != f.de, "{f:?}");
        }
    }

    #[test]
    fn clean_settings_have_no_findings() {
        for s in [
            basic(Proto::Imap, "imap.gmail.com", 993, true, "a@gmail.com", APP_PASSWORD),
            basic(Proto::Smtp, "smtp.gmail.com", 587, false, "a@gmail.com", "abcdefghijklmnop"),
            basic(Proto::Smtp, "smtp.gmail.com", 465, true, "a@gmail.com", APP_PASSWORD),
            oauth(Proto::Imap, "outlook.office365.com", 993, true, "a@contoso.com"),
            oauth(Proto::Smtp, "smtp.office365.com", 587, false, "a@contoso.com"),
            basic(Proto::Pop3, "pop.gmx.net", 995, true, "a@gmx.de", "secret"),
            basic(Proto::Imap, "mail.example.com", 143, false, "a", "secret"),
            basic(Proto::Smtp, "SMTP.GMX.example.", 587, false, "a", "secret"),
        ] {
            assert_eq!(validate(&s), vec![], "{s:?}");
        }
    }

    #[test]
    fn starttls_port_with_tls_on() {
        let f = validate(&basic(Proto::Smtp, "mail.example.com", 587, true, "a", "pw"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].severity.clone(), f[0].field.as_str()), (Severity::Error, "tls"));
        assert!(f[0].en.contains("port 587") || f[0].en.contains("Port 587"));
        assert!(f[0].en.contains("STARTTLS") && f[0].en.contains("465"), "{}", f[0].en);
        assert_bilingual(&f);
        let f = validate(&basic(Proto::Imap, "mail.example.com", 143, true, "a", "pw"));
        assert!(on(&f, "tls")[0].en.contains("993"));
        let f = validate(&basic(Proto::Pop3, "mail.example.com", 110, true, "a", "pw"));
        assert!(on(&f, "tls")[0].en.contains("995"));
        // Non-trigger: the same port with TLS off.
        assert!(on(&validate(&basic(Proto::Smtp, "mail.example.com", 587, false, "a", "pw")), "tls").is_empty());
    }

    #[test]
    fn implicit_tls_port_with_tls_off() {
        for (proto, port, fix) in [(Proto::Smtp, 465, "587"), (Proto::Imap, 993, "143"), (Proto::Pop3, 995, "110")] {
            let f = validate(&basic(proto, "mail.example.com", port, false, "a", "pw"));
            let tls = on(&f, "tls");
            assert_eq!(tls.len(), 1, "{f:?}");
            assert_eq!(tls[0].severity, Severity::Error);
            assert!(tls[0].en.contains("turn TLS on") && tls[0].en.contains(fix), "{}", tls[0].en);
            assert!(on(&validate(&basic(proto, "mail.example.com", port, true, "a", "pw")), "tls").is_empty());
        }
    }

    #[test]
    fn port_of_another_protocol() {
        let f = validate(&basic(Proto::Pop3, "mail.example.com", 993, true, "a", "pw"));
        let port = on(&f, "port");
        assert_eq!(port.len(), 1, "{f:?}");
        assert!(port[0].en.contains("IMAP") && port[0].en.contains("995"), "{}", port[0].en);
        // Only one finding for one mistake.
        assert!(on(&f, "tls").is_empty());
        assert!(on(&validate(&basic(Proto::Imap, "mail.example.com", 993, true, "a", "pw")), "port").is_empty());
    }

    #[test]
    fn smtp_port_25_is_a_warning() {
        let f = validate(&basic(Proto::Smtp, "mail.example.com", 25, false, "a", "pw"));
        assert_eq!(on(&f, "port").first().map(|f| f.severity.clone()), Some(Severity::Warning));
        assert!(on(&validate(&basic(Proto::Smtp, "mail.example.com", 587, false, "a", "pw")), "port").is_empty());
    }

    #[test]
    fn bad_host_and_port_values() {
        let f = validate(&basic(Proto::Imap, " ", 993, true, "a", "pw"));
        assert_eq!(on(&f, "host")[0].severity, Severity::Error);
        let f = validate(&basic(Proto::Imap, "imaps://imap.gmail.com", 993, true, "a@gmail.com", APP_PASSWORD));
        assert_eq!(on(&f, "host").len(), 1, "{f:?}");
        assert!(on(&f, "host")[0].en.contains("imaps://"));
        let f = validate(&basic(Proto::Imap, "imap.gmail.com:993", 993, true, "a@gmail.com", APP_PASSWORD));
        assert_eq!(on(&f, "host").len(), 1);
        let f = validate(&basic(Proto::Imap, "mail.example.com", 0, true, "a", "pw"));
        assert_eq!(on(&f, "port")[0].severity, Severity::Error);
    }

    #[test]
    fn oauth2_with_a_password() {
        let mut s = oauth(Proto::Imap, "mail.example.com", 993, true, "a@example.com");
        assert!(on(&validate(&s), "password").is_empty());
        s.has_password = true;
        let f = on(&validate(&s), "password");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].en.contains("OAuth2") && f[0].en.contains("delete"));
        assert_bilingual(&f);
        s.has_password = false;
        s.password = Some("hunter2-secret");
        let f = on(&validate(&s), "password");
        assert_eq!(f.len(), 1);
        assert!(!f[0].en.contains("hunter2-secret") && !f[0].de.contains("hunter2-secret"));
    }

    #[test]
    fn basic_without_a_password() {
        let mut s = basic(Proto::Imap, "mail.example.com", 993, true, "a", "");
        s.has_password = false;
        assert_eq!(on(&validate(&s), "password")[0].severity, Severity::Error);
        s.has_password = true;
        s.password = None;
        assert!(on(&validate(&s), "password").is_empty());
    }

    #[test]
    fn basic_on_microsoft_is_refused() {
        let secret = "Sup3r-Secret!";
        for (proto, host, port, tls) in
            [(Proto::Imap, "outlook.office365.com", 993, true), (Proto::Pop3, "Outlook.Office365.com", 995, true)]
        {
            let f = validate(&basic(proto, host, port, tls, "a@contoso.com", secret));
            let auth = on(&f, "auth");
            assert_eq!(auth.len(), 1, "{f:?}");
            assert_eq!(auth[0].severity, Severity::Error);
            assert!(auth[0].en.contains("OAuth2") && auth[0].en.contains("Basic"));
            assert_bilingual(&auth);
            for finding in &f {
                assert!(!finding.en.contains(secret) && !finding.de.contains(secret), "password leaked: {finding:?}");
            }
            assert!(on(&validate(&oauth(proto, host, port, tls, "a@contoso.com")), "auth").is_empty());
        }
        // SMTP AUTH Basic is being retired, not gone everywhere yet.
        let f = validate(&basic(Proto::Smtp, "smtp.office365.com", 587, false, "a@contoso.com", secret));
        assert_eq!(on(&f, "auth")[0].severity, Severity::Warning);
        assert!(on(&f, "auth")[0].en.contains("OAuth2"));
        // Outlook.com refuses passwords on every protocol.
        let f = validate(&basic(Proto::Smtp, "smtp-mail.outlook.com", 587, false, "a@outlook.com", secret));
        assert_eq!(on(&f, "auth")[0].severity, Severity::Error);
        // Non-trigger: Basic on a provider that accepts it.
        assert!(on(&validate(&basic(Proto::Imap, "imap.gmx.net", 993, true, "a@gmx.de", secret)), "auth").is_empty());
    }

    #[test]
    fn oauth2_on_a_provider_without_it() {
        let f = validate(&oauth(Proto::Imap, "imap.gmx.net", 993, true, "a@gmx.de"));
        assert_eq!(on(&f, "auth")[0].severity, Severity::Error);
        assert!(on(&validate(&oauth(Proto::Imap, "imap.gmail.com", 993, true, "a@gmail.com")), "auth").is_empty());
        // Unknown hosts: we cannot tell, so no finding.
        assert!(on(&validate(&oauth(Proto::Imap, "mail.example.com", 993, true, "a@example.com")), "auth").is_empty());
    }

    #[test]
    fn gmail_normal_password_is_flagged() {
        let secret = "MyGooglePassword1";
        let f = validate(&basic(Proto::Imap, "imap.gmail.com", 993, true, "a@gmail.com", secret));
        let pw = on(&f, "password");
        assert_eq!(pw.len(), 1, "{f:?}");
        assert_eq!(pw[0].severity, Severity::Warning);
        assert!(pw[0].en.starts_with("Gmail wants an app password: turn on 2-Step Verification"));
        assert!(pw[0].de.contains("App-Passwort"));
        assert!(f.iter().all(|x| !x.en.contains(secret) && !x.de.contains(secret)));
        // Non-triggers: app passwords in both shapes, OAuth2, another provider, no value.
        for ok in [APP_PASSWORD, "abcdefghijklmnop"] {
            assert!(on(&validate(&basic(Proto::Smtp, "smtp.gmail.com", 587, false, "a@gmail.com", ok)), "password").is_empty());
        }
        assert!(on(&validate(&basic(Proto::Imap, "imap.gmx.net", 993, true, "a@gmx.de", secret)), "password").is_empty());
        let mut unknown_value = basic(Proto::Imap, "imap.gmail.com", 993, true, "a@gmail.com", secret);
        unknown_value.password = None;
        assert!(on(&validate(&unknown_value), "password").is_empty());
    }

    #[test]
    fn gmail_app_password_shape() {
        assert!(looks_like_gmail_app_password("abcd efgh ijkl mnop"));
        assert!(looks_like_gmail_app_password("abcdefghijklmnop"));
        assert!(looks_like_gmail_app_password(" abcd\u{a0}efgh ijkl mnop "));
        assert!(!looks_like_gmail_app_password("abcd efgh ijkl mno"));
        assert!(!looks_like_gmail_app_password("abcdefgh ijklmnop"));
        assert!(!looks_like_gmail_app_password("ABCD EFGH IJKL MNOP"));
        assert!(!looks_like_gmail_app_password("abcd efgh ijkl mn0p"));
        assert!(!looks_like_gmail_app_password("abcdefghijklmnopq"));
        assert!(!looks_like_gmail_app_password(""));
        assert!(!looks_like_gmail_app_password("äbcd efgh ijkl mnop"));
    }

    #[test]
    fn app_password_normalisation() {
        assert_eq!(normalise_app_password("abcd efgh ijkl mnop"), "abcdefghijklmnop");
        assert_eq!(normalise_app_password(" abcd\u{a0}efgh\tijkl mnop\n"), "abcdefghijklmnop");
        assert_eq!(normalise_app_password("abcdefghijklmnop"), "abcdefghijklmnop");
        // Not an app password: spaces may be part of it, so it is left alone.
        assert_eq!(normalise_app_password("correct horse battery"), "correct horse battery");
        assert_eq!(normalise_app_password(" pw with spaces "), " pw with spaces ");
        assert_eq!(normalise_app_password("abcd efgh ijkl mn0p"), "abcd efgh ijkl mn0p");
        assert_eq!(normalise_app_password(""), "");
    }

    #[test]
    fn username_must_be_the_full_address() {
        let f = validate(&basic(Proto::Imap, "imap.gmail.com", 993, true, "jane.doe", APP_PASSWORD));
        let user = on(&f, "username");
        assert_eq!(user.len(), 1, "{f:?}");
        assert_eq!(user[0].severity, Severity::Error);
        assert!(user[0].en.contains("jane.doe@gmail.com") && user[0].en.contains("full e-mail address"));
        assert_bilingual(&user);
        // Providers hosting own domains suggest example.com.
        let f = validate(&basic(Proto::Imap, "imap.strato.de", 993, true, "info", "pw"));
        assert!(on(&f, "username")[0].en.contains("info@example.com"));
        // Non-triggers: the full address; an unknown host.
        assert!(on(&validate(&basic(Proto::Imap, "imap.gmail.com", 993, true, "jane.doe@gmail.com", APP_PASSWORD)), "username").is_empty());
        assert!(on(&validate(&basic(Proto::Imap, "mail.example.com", 993, true, "jane", "pw")), "username").is_empty());
        let f = validate(&basic(Proto::Imap, "mail.example.com", 993, true, "  ", "pw"));
        assert_eq!(on(&f, "username")[0].severity, Severity::Error);
    }

    #[test]
    fn local_part_preset_warns_on_full_address() {
        let mut preset = super::super::by_id("webde").expect("webde");
        preset.username = UsernameForm::LocalPart;
        let mut out = Vec::new();
        let s = basic(Proto::Imap, "imap.web.de", 993, true, "jane@web.de", "pw");
        check_against_preset(&s, &preset, s.username, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].severity.clone(), out[0].field.as_str()), (Severity::Warning, "username"));
        assert!(out[0].en.contains("\"jane\""));
        let mut out = Vec::new();
        check_against_preset(&s, &preset, "jane", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn preset_host_with_an_unused_port() {
        let f = validate(&basic(Proto::Imap, "imap.gmail.com", 1993, true, "a@gmail.com", APP_PASSWORD));
        let port = on(&f, "port");
        assert_eq!(port.len(), 1, "{f:?}");
        assert_eq!(port[0].severity, Severity::Warning);
        assert!(port[0].en.contains("993") && port[0].en.contains("TLS on") && port[0].en.contains("imap.gmail.com"));
        assert_bilingual(&port);
        // Standard port of a mode the preset does not use: STARTTLS on 143 at Gmail.
        let f = validate(&basic(Proto::Imap, "imap.gmail.com", 143, false, "a@gmail.com", APP_PASSWORD));
        assert_eq!(on(&f, "port").len(), 1);
        // Non-triggers: the preset's port and a documented alternative.
        assert!(on(&validate(&basic(Proto::Smtp, "smtp.gmail.com", 465, true, "a@gmail.com", APP_PASSWORD)), "port").is_empty());
        assert!(on(&validate(&basic(Proto::Imap, "imap.gmx.net", 143, false, "a@gmx.de", "pw")), "port").is_empty());
        assert!(on(&validate(&basic(Proto::Imap, "mail.example.com", 1993, true, "a", "pw")), "port").is_empty());
    }

    #[test]
    fn host_of_another_protocol() {
        let f = validate(&basic(Proto::Pop3, "imap.gmail.com", 995, true, "a@gmail.com", APP_PASSWORD));
        let host = on(&f, "host");
        assert_eq!(host.len(), 1, "{f:?}");
        assert_eq!(host[0].severity, Severity::Warning);
        assert!(host[0].en.contains("pop.gmail.com") && host[0].en.contains("995"));
        // iCloud has no POP3 at all.
        let f = validate(&basic(Proto::Pop3, "imap.mail.me.com", 995, true, "a@icloud.com", "pw"));
        assert_eq!(on(&f, "host")[0].severity, Severity::Error);
        let f = validate(&basic(Proto::Smtp, "outlook.office365.com", 587, false, "a@contoso.com", "pw"));
        let host = on(&f, "host");
        assert!(host[0].en.contains("POP3/IMAP server") && host[0].en.contains("smtp.office365.com"), "{host:?}");
        // Same host for several protocols is fine.
        assert!(on(&validate(&basic(Proto::Pop3, "posteo.de", 995, true, "a@posteo.de", "pw")), "host").is_empty());
    }

    #[test]
    fn debug_redacts_the_password() {
        let s = basic(Proto::Imap, "imap.gmail.com", 993, true, "a@gmail.com", "hunter2-secret");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2-secret") && dbg.contains("<redacted>") && dbg.contains("a@gmail.com"), "{dbg}");
    }
}
