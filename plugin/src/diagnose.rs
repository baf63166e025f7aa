//! Admin diagnostics: a server response or a TLS/network failure text turned into a cause
//! and an action, in English and German. SMTP replies are explained by `smtp::explain`; this
//! module adds IMAP/POP3 responses and connection failures.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub cause_en: String,
    pub cause_de: String,
    pub action_en: String,
    pub action_de: String,
}

impl Diagnosis {
    fn new(cause_en: &str, cause_de: &str, action_en: &str, action_de: &str) -> Self {
        Diagnosis { cause_en: cause_en.into(), cause_de: cause_de.into(), action_en: action_en.into(), action_de: action_de.into() }
    }
}

/// "535-5.7.8 ..." lines: the reply code and the text without it (lines joined by "\n").
fn smtp_reply(text: &str) -> Option<(u16, String)> {
    let mut code = None;
    let mut lines = Vec::new();
    for line in text.trim().lines() {
        let b = line.as_bytes();
        if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || !matches!(b.get(3), None | Some(b' ' | b'-')) {
            return None;
        }
        let c: u16 = line[..3].parse().ok()?;
        if *code.get_or_insert(c) != c {
            return None;
        }
        lines.push(line.get(4..).unwrap_or(""));
    }
    Some((code?, lines.join("\n")))
}

/// Maps a server response or TLS/network failure text to a cause and an admin action.
pub fn diagnose(text: &str) -> Option<Diagnosis> {
    if let Some((code, reply)) = smtp_reply(text) {
        if let Some(x) = crate::smtp::explain(code, &reply) {
            return Some(Diagnosis { cause_en: x.cause.en, cause_de: x.cause.de, action_en: x.action.en, action_de: x.action.de });
        }
    }
    let lower = text.to_lowercase();
    let has = |w: &str| lower.contains(w);
    let d = if has("application-specific password required") || (has("[alert]") && has("application-specific password")) {
        Diagnosis::new(
            "Google requires an app password for this account: the normal Google password is not accepted for IMAP/POP3.",
            "Google verlangt für dieses Konto ein App-Passwort: Das normale Google-Passwort wird für IMAP/POP3 nicht akzeptiert.",
            "Turn on 2-Step Verification for the Google account, create an app password (Google Account > Security > App passwords) and enter it here as the password; or switch this account to OAuth2.",
            "Aktivieren Sie die Bestätigung in zwei Schritten für das Google-Konto, erstellen Sie ein App-Passwort (Google-Konto > Sicherheit > App-Passwörter) und tragen Sie es hier als Kennwort ein; oder stellen Sie dieses Konto auf OAuth2 um.",
        )
    } else if has("authenticate failed") {
        // Exchange Online's only answer to a refused IMAP/POP3 sign-in, whatever the reason.
        Diagnosis::new(
            "Microsoft 365 refused the IMAP/POP3 sign-in: the password or token is wrong, IMAP/POP3 is disabled for the mailbox, or Basic authentication (password) is no longer allowed.",
            "Microsoft 365 hat die IMAP/POP3-Anmeldung abgelehnt: Kennwort oder Token ist falsch, IMAP/POP3 ist für das Postfach deaktiviert, oder die Standardauthentifizierung (Kennwort) ist nicht mehr erlaubt.",
            "Use OAuth2 for this account (Microsoft no longer accepts passwords for IMAP/POP3), check that IMAP or POP is enabled for the mailbox (Microsoft 365 admin center > Users > Active users > the mailbox > Mail > Manage email apps), and that the token's user is the mailbox itself or has FullAccess to it.",
            "Verwenden Sie OAuth2 für dieses Konto (Microsoft akzeptiert für IMAP/POP3 keine Kennwörter mehr), prüfen Sie, ob IMAP bzw. POP für das Postfach aktiviert ist (Microsoft 365 Admin Center > Benutzer > Aktive Benutzer > Postfach > E-Mail > E-Mail-Apps verwalten) und ob der Benutzer des Tokens das Postfach selbst ist oder Vollzugriff darauf hat.",
        )
    } else if has("notvalidforname") || (has("certificate") && (has("name mismatch") || has("not valid for"))) {
        Diagnosis::new(
            "The server's TLS certificate is not issued for the host name that was configured (certificate name mismatch).",
            "Das TLS-Zertifikat des Servers ist nicht für den eingetragenen Hostnamen ausgestellt (Zertifikatsname passt nicht).",
            "Enter the host name the provider documents (the one in its certificate, e.g. imap.provider.com instead of mail.your-domain.com); do not use an IP address.",
            "Tragen Sie den Hostnamen ein, den der Anbieter dokumentiert (den aus seinem Zertifikat, z. B. imap.anbieter.de statt mail.ihre-domain.de); verwenden Sie keine IP-Adresse.",
        )
    } else if has("expired") && (has("certificate") || has("cert") || lower.trim() == "expired") {
        Diagnosis::new(
            "The server's TLS certificate has expired.",
            "Das TLS-Zertifikat des Servers ist abgelaufen.",
            "Ask the mail server's operator to renew the certificate; also check that this machine's clock is correct.",
            "Bitten Sie den Betreiber des Mailservers, das Zertifikat zu erneuern; prüfen Sie außerdem, ob die Uhr dieses Rechners richtig geht.",
        )
    } else if has("unknownissuer") || has("unknown issuer") || has("self-signed") || has("self signed") || has("unknown ca") {
        Diagnosis::new(
            "The server's TLS certificate is not signed by a trusted certificate authority (unknown issuer or self-signed).",
            "Das TLS-Zertifikat des Servers ist nicht von einer vertrauenswürdigen Zertifizierungsstelle signiert (unbekannter Aussteller oder selbst signiert).",
            "Ask the mail server's operator to install a certificate from a public certificate authority (e.g. Let's Encrypt) including the intermediate certificates.",
            "Bitten Sie den Betreiber des Mailservers, ein Zertifikat einer öffentlichen Zertifizierungsstelle (z. B. Let's Encrypt) samt Zwischenzertifikaten zu installieren.",
        )
    } else if has("connection refused") || has("econnrefused") {
        Diagnosis::new(
            "The server refused the connection: nothing accepts connections on this host and port.",
            "Der Server hat die Verbindung abgelehnt: Auf diesem Host und Port nimmt nichts Verbindungen an.",
            "Check the host name and port (IMAP 993, POP3 995, SMTP 465 or 587) and that a firewall does not block the connection.",
            "Prüfen Sie Hostnamen und Port (IMAP 993, POP3 995, SMTP 465 oder 587) und ob eine Firewall die Verbindung blockiert.",
        )
    } else if has("timed out") || has("timeout") || has("etimedout") {
        Diagnosis::new(
            "The connection timed out: the server did not answer in time.",
            "Zeitüberschreitung der Verbindung: Der Server hat nicht rechtzeitig geantwortet.",
            "Check the host name and port and that a firewall allows outgoing connections to that port; many hosting providers block port 25, so use 587 or 465 for sending.",
            "Prüfen Sie Hostnamen und Port und ob eine Firewall ausgehende Verbindungen zu diesem Port erlaubt; viele Hoster sperren Port 25, verwenden Sie zum Senden daher 587 oder 465.",
        )
    } else if (has("starttls") || has("stls")) && (has("not offered") || has("not advertised") || has("not supported")) {
        Diagnosis::new(
            "The server does not offer STARTTLS, so the connection cannot be encrypted on this port.",
            "Der Server bietet kein STARTTLS an, daher kann die Verbindung auf diesem Port nicht verschlüsselt werden.",
            "Set the security to TLS and use the TLS port (IMAP 993, POP3 995, SMTP 465); never fall back to an unencrypted connection.",
            "Stellen Sie die Sicherheit auf TLS und verwenden Sie den TLS-Port (IMAP 993, POP3 995, SMTP 465); weichen Sie nie auf eine unverschlüsselte Verbindung aus.",
        )
    } else {
        return None;
    };
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, en: &[&str], de: &[&str]) {
        let d = diagnose(text).unwrap_or_else(|| panic!("no diagnosis for {text:?}"));
        let en_all = format!("{} | {}", d.cause_en, d.action_en);
        let de_all = format!("{} | {}", d.cause_de, d.action_de);
        for p in en {
            assert!(en_all.contains(p), "{p:?} missing for {text:?}: {en_all}");
        }
        for p in de {
            assert!(de_all.contains(p), "{p:?} missing for {text:?}: {de_all}");
        }
    }

    #[test]
    fn smtp_replies_use_smtp_explain() {
        check(
            "534-5.7.9 Application-specific password required. For more information, go to\n534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor",
            &["app password", "2-Step Verification"],
            &["App-Passwort"],
        );
        check("535-5.7.8 Username and Password not accepted.\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials", &["Gmail", "user name and password"], &["Benutzername und Kennwort"]);
        check(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            &["SMTP AUTH is disabled", "Set-CASMailbox", "-SmtpClientAuthenticationDisabled $false"],
            &["deaktiviert", "Set-CASMailbox"],
        );
        check("550 5.7.60 SMTP; Client does not have permissions to send as this sender", &["Send As"], &["Senden als"]);
        check("554 5.2.252 SendAsDenied; sender@example.com not allowed to send as from@example.com", &["Send As"], &["Senden als"]);
        check("550 5.7.30 Basic authentication is not supported for Client Submission.", &["retired Basic authentication", "OAuth2"], &["OAuth2", "abgeschaltet"]);
    }

    #[test]
    fn imap_responses() {
        check(
            "* NO [ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)",
            &["app password", "IMAP"],
            &["App-Passwort"],
        );
        check("a1 NO AUTHENTICATE failed.", &["Microsoft 365", "OAuth2", "IMAP"], &["OAuth2", "abgelehnt"]);
    }

    #[test]
    fn tls_and_network_failures() {
        check("invalid peer certificate: NotValidForName", &["name mismatch", "host name"], &["Hostnamen"]);
        check("invalid peer certificate: Expired", &["expired", "renew"], &["abgelaufen", "erneuern"]);
        check("invalid peer certificate: UnknownIssuer", &["unknown issuer", "certificate authority"], &["Zertifizierungsstelle"]);
        check("Connection refused (os error 111)", &["refused", "port"], &["abgelehnt", "Port"]);
        check("connection timed out", &["timed out", "firewall"], &["Zeitüberschreitung", "Firewall"]);
        check("STARTTLS not offered by the server", &["does not offer STARTTLS", "TLS port"], &["kein STARTTLS"]);
    }

    #[test]
    fn unknown_text_gives_none() {
        assert_eq!(diagnose("250 OK"), None);
        assert_eq!(diagnose("* OK IMAP4rev1 ready"), None);
        assert_eq!(diagnose(""), None);
    }
}
