//! Admin diagnostics: a server response or a TLS/network failure text turned into a cause
//! and an action, in English and German. SMTP replies are explained by `smtp::explain`; this
//! module adds IMAP/POP3 responses and connection failures.

use crate::error::{Error, ErrorKind, Stage};

mod refusal;

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
    } else if has("does not resolve")
        || has("name or service not known")
        || has("failed to lookup address")
        || has("nodename nor servname")
        || has("no such host")
    {
        Diagnosis::new(
            "The server's host name does not exist in DNS: it is probably misspelt.",
            "Der Hostname des Servers existiert im DNS nicht: Vermutlich ist er falsch geschrieben.",
            "Check the spelling of the host name and use the one the provider documents (e.g. imap.gmail.com, outlook.office365.com); `mailplug discover ADDRESS` suggests it.",
            "Prüfen Sie die Schreibweise des Hostnamens und verwenden Sie den, den der Anbieter dokumentiert (z. B. imap.gmail.com, outlook.office365.com); `mailplug discover ADRESSE` schlägt ihn vor.",
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

/// The stage's name for the admin, in German.
fn stage_de(stage: Stage) -> &'static str {
    match stage {
        Stage::Connect => "Verbindungsaufbau",
        Stage::Greeting => "Begrüßung des Servers",
        Stage::Capabilities => "Abfrage der Fähigkeiten",
        Stage::Starttls => "STARTTLS",
        Stage::Authenticate => "Anmeldung",
        Stage::SelectMailbox => "Öffnen des Ordners",
        Stage::ListMessages => "Auflisten der Nachrichten",
        Stage::FetchMessage => "Abruf einer Nachricht",
        Stage::Envelope => "Umschlag (MAIL FROM / RCPT TO)",
        Stage::Data => "Nachrichtendaten",
        Stage::Logout => "Abmeldung",
    }
}

/// Explains any error for the admin: first what the server's reply or the failure text says
/// (provider messages, certificate problems), then what the error's kind and stage tell.
/// Always returns a diagnosis.
pub fn explain(error: &Error) -> Diagnosis {
    if let Some(d) = wrong_tls_switch(error) {
        return d;
    }
    if let Some(d) = folder_refused(error) {
        return d;
    }
    if let Some(reply) = &error.reply {
        if let Ok(code) = reply.code.parse::<u16>() {
            if let Some(x) = crate::smtp::explain(code, &reply.text) {
                return Diagnosis { cause_en: x.cause.en, cause_de: x.cause.de, action_en: x.action.en, action_de: x.action.de };
            }
        }
    }
    // An ordinary refusal is explained by what was refused, never by words in the replies.
    if let Some(r) = &error.refusal {
        return refusal::explain(error, r);
    }
    if let Some(reply) = &error.reply {
        if let Some(d) = diagnose(&reply.text) {
            return d;
        }
    }
    if let Some(d) = idle_lost(error) {
        return d;
    }
    if let Some(d) = diagnose(&error.message) {
        return d;
    }
    by_kind(error)
}

/// An idling IMAP connection the server ended (BYE) or that was closed (see
/// `imap::client::idle`): usually a restart or the server's limit on quiet connections;
/// mailplug connects again by itself.
fn idle_lost(error: &Error) -> Option<Diagnosis> {
    let idle = error.message.contains("while the mailbox was idling") || error.message.contains("ended the idling connection");
    if error.kind != ErrorKind::Network || !idle {
        return None;
    }
    Some(Diagnosis::new(
        "The server ended the idle connection (IMAP IDLE) that waited for new mail: a server restart or maintenance, or a limit on how long a quiet connection may stay open (on the server, a firewall or a NAT router).",
        "Der Server hat die wartende Verbindung (IMAP IDLE) beendet: ein Neustart oder eine Wartung des Servers, oder eine Grenze, wie lange eine ruhige Verbindung offen bleiben darf (auf dem Server, in einer Firewall oder einem NAT-Router).",
        "Nothing, if it happens now and then: mailplug connects again and fetches what arrived meanwhile. If it happens every few minutes, lower limits.idle_renew_secs below the limit of the server or the firewall, or ask its administrator to keep quiet connections open longer.",
        "Nichts, wenn es gelegentlich vorkommt: mailplug verbindet sich neu und ruft ab, was inzwischen eingetroffen ist. Wenn es alle paar Minuten passiert, setzen Sie limits.idle_renew_secs unter die Grenze des Servers oder der Firewall, oder bitten Sie deren Administrator, ruhige Verbindungen länger offen zu lassen.",
    ))
}

/// The two ways to get the portal's TLS switch wrong: TLS on for a STARTTLS port (the server
/// answers the TLS handshake in clear text), and TLS off for a TLS port (the server waits for
/// a handshake, so no greeting ever comes).
fn wrong_tls_switch(error: &Error) -> Option<Diagnosis> {
    let lower = error.message.to_lowercase();
    let clear_text_answer = error.kind == ErrorKind::Tls
        && (lower.contains("corrupt message") || lower.contains("invalidcontenttype") || lower.contains("wrong version")
            || lower.contains("not a tls") || lower.contains("invalidmessage") || lower.contains("did not speak tls"));
    if clear_text_answer {
        return Some(Diagnosis::new(
            "The server answered in clear text instead of TLS: this port expects STARTTLS (the TLS switch off), or it is not a mail port.",
            "Der Server hat unverschlüsselt statt mit TLS geantwortet: Dieser Port erwartet STARTTLS (TLS-Schalter aus), oder es ist kein Mail-Port.",
            "Either turn the TLS switch off for this port (STARTTLS: IMAP 143, POP3 110, SMTP 587), or keep TLS on and use the TLS port (IMAP 993, POP3 995, SMTP 465).",
            "Schalten Sie TLS für diesen Port aus (STARTTLS: IMAP 143, POP3 110, SMTP 587), oder lassen Sie TLS an und verwenden Sie den TLS-Port (IMAP 993, POP3 995, SMTP 465).",
        ));
    }
    // With TLS on, a server that never greets after the handshake is not a TLS switch problem.
    if error.kind == ErrorKind::Timeout && error.stage == Stage::Greeting && !lower.contains("after the tls handshake") {
        return Some(Diagnosis::new(
            "The server sent no greeting: it probably expects TLS from the first byte (the TLS switch on), or the port belongs to another service.",
            "Der Server hat keine Begrüßung gesendet: Er erwartet wahrscheinlich TLS ab dem ersten Byte (TLS-Schalter an), oder der Port gehört zu einem anderen Dienst.",
            "Turn the TLS switch on for the TLS ports (IMAP 993, POP3 995, SMTP 465), or use the STARTTLS port (IMAP 143, POP3 110, SMTP 587) with TLS off.",
            "Schalten Sie TLS für die TLS-Ports an (IMAP 993, POP3 995, SMTP 465), oder verwenden Sie den STARTTLS-Port (IMAP 143, POP3 110, SMTP 587) mit TLS aus.",
        ));
    }
    None
}

/// An IMAP folder the server refused, on a server that keeps folders under a prefix (the
/// guest's message names it, see `imap::namespace::prefix_note`), and a refused save of a
/// sent message's copy (APPEND).
fn folder_refused(error: &Error) -> Option<Diagnosis> {
    if let Some(prefix) = crate::imap::namespace::prefix_named_in(&error.message) {
        return Some(Diagnosis {
            cause_en: format!(
                "This server keeps all folders under the prefix \"{prefix}\" (its personal namespace), and it refused the folder name used under that prefix."
            ),
            cause_de: format!(
                "Dieser Server legt alle Ordner unter dem Präfix \"{prefix}\" ab (sein persönlicher Namensraum) und hat den Ordnernamen unter diesem Präfix abgelehnt."
            ),
            action_en: format!(
                "Configure a folder name the server accepts (mailplug puts \"{prefix}\" in front of names outside it, e.g. \"Sent\" becomes \"{prefix}Sent\"), or create the folder under that prefix in a mail program, and check that the user may write to it."
            ),
            action_de: format!(
                "Tragen Sie einen Ordnernamen ein, den der Server annimmt (mailplug setzt \"{prefix}\" vor Namen außerhalb davon, z. B. wird \"Sent\" zu \"{prefix}Sent\"), oder legen Sie den Ordner in einem Mailprogramm unter diesem Präfix an, und prüfen Sie, ob der Benutzer darin schreiben darf."
            ),
        });
    }
    if error.stage == Stage::Data && error.message.starts_with("the server refused to save the copy") {
        return Some(Diagnosis {
            cause_en: format!("The server refused to save the copy of the sent message: {}", error.message),
            cause_de: "Der Server hat das Speichern der Kopie der gesendeten Nachricht abgelehnt; die Nachricht selbst wurde gesendet.".into(),
            action_en: "Check that the folder exists and the user may write to it, and the mailbox's quota; or configure another folder for copies (`save_sent`).".into(),
            action_de: "Prüfen Sie, ob der Ordner existiert und der Benutzer darin schreiben darf, und das Speicherkontingent des Postfachs; oder tragen Sie einen anderen Ordner für Kopien ein (`save_sent`).".into(),
        });
    }
    None
}

fn by_kind(error: &Error) -> Diagnosis {
    let stage_de = stage_de(error.stage);
    let own = |en_prefix: &str, de: String, action_en: &str, action_de: &str| Diagnosis {
        cause_en: format!("{en_prefix}{}", error.message),
        cause_de: de,
        action_en: action_en.into(),
        action_de: action_de.into(),
    };
    match (error.kind, error.stage) {
        (ErrorKind::AuthRejected, _) => Diagnosis::new(
            "The server refused the login: the user name or the password (or the OAuth2 token) is wrong, or the account may not use this protocol.",
            "Der Server hat die Anmeldung abgelehnt: Benutzername oder Kennwort (bzw. das OAuth2-Token) ist falsch, oder das Konto darf dieses Protokoll nicht verwenden.",
            "Check the user name (the full address or only the part before the @, as the provider wants) and the password; Gmail, Yahoo, AOL and iCloud need an app password, Microsoft 365 needs OAuth2; check that IMAP/POP3/SMTP access is enabled in the provider's settings.",
            "Prüfen Sie den Benutzernamen (die volle Adresse oder nur den Teil vor dem @, je nach Anbieter) und das Kennwort; Gmail, Yahoo, AOL und iCloud verlangen ein App-Passwort, Microsoft 365 verlangt OAuth2; prüfen Sie, ob der IMAP-/POP3-/SMTP-Zugriff in den Einstellungen des Anbieters aktiviert ist.",
        ),
        (ErrorKind::Network, Stage::Connect) => own(
            "The server could not be reached: ",
            "Der Server ist nicht erreichbar (Verbindungsaufbau fehlgeschlagen).".into(),
            "Check the host name and the port, and that a firewall allows the connection.",
            "Prüfen Sie Hostnamen und Port und ob eine Firewall die Verbindung erlaubt.",
        ),
        (ErrorKind::Network, _) => own(
            "The connection broke: ",
            format!("Die Verbindung ist abgebrochen ({stage_de})."),
            "Try again later; if it keeps happening, check the network and whether the provider limits connections.",
            "Versuchen Sie es später erneut; wenn es wieder passiert, prüfen Sie das Netzwerk und ob der Anbieter Verbindungen begrenzt.",
        ),
        (ErrorKind::Tls, _) => own(
            "The encrypted (TLS) connection could not be established: ",
            "Die verschlüsselte Verbindung (TLS) konnte nicht aufgebaut werden.".into(),
            "Check the host name (it must match the server's certificate) and that the TLS switch matches the port (TLS on for 993/995/465, off for 143/110/587).",
            "Prüfen Sie den Hostnamen (er muss zum Zertifikat des Servers passen) und ob der TLS-Schalter zum Port passt (TLS an für 993/995/465, aus für 143/110/587).",
        ),
        (ErrorKind::Timeout, _) => own(
            "The server did not answer in time: ",
            format!("Der Server hat nicht rechtzeitig geantwortet ({stage_de})."),
            "Try again later; if it keeps happening, check the host name, the port and the firewall.",
            "Versuchen Sie es später erneut; wenn es wieder passiert, prüfen Sie Hostnamen, Port und Firewall.",
        ),
        (ErrorKind::Policy, Stage::Starttls) => own(
            "",
            "Der Server bietet kein sicheres STARTTLS an, daher wird kein Kennwort gesendet.".into(),
            "Set the security to TLS and use the TLS port (IMAP 993, POP3 995, SMTP 465); never fall back to an unencrypted connection.",
            "Stellen Sie die Sicherheit auf TLS und verwenden Sie den TLS-Port (IMAP 993, POP3 995, SMTP 465); weichen Sie nie auf eine unverschlüsselte Verbindung aus.",
        ),
        (ErrorKind::Policy, _) => own(
            "",
            format!("Eine Sicherheitsregel hat die Verbindung beendet ({stage_de})."),
            "Change the setting the message names; the rule protects the mailbox's credentials and content.",
            "Ändern Sie die in der Meldung genannte Einstellung; die Regel schützt Zugangsdaten und Inhalte des Postfachs.",
        ),
        (ErrorKind::Protocol, Stage::SelectMailbox) => own(
            "",
            "Der Ordner konnte nicht geöffnet werden; vermutlich gibt es ihn nicht.".into(),
            "Check the folder name (use \"/\" between folder levels, e.g. \"INBOX/Support\") or create the folder.",
            "Prüfen Sie den Ordnernamen (\"/\" zwischen den Ordnerebenen, z. B. \"INBOX/Support\") oder legen Sie den Ordner an.",
        ),
        (ErrorKind::Protocol, _) => own(
            "",
            format!("Der Server hat unerwartet geantwortet ({stage_de})."),
            "Check that the port belongs to the protocol (IMAP 993/143, POP3 995/110, SMTP 465/587); if it does, give this message to the provider.",
            "Prüfen Sie, ob der Port zum Protokoll gehört (IMAP 993/143, POP3 995/110, SMTP 465/587); wenn ja, geben Sie diese Meldung an den Anbieter weiter.",
        ),
        (ErrorKind::Refused, _) => own(
            "",
            format!("Der Server hat die Anfrage abgelehnt ({stage_de})."),
            "Read the server's reply in the message: a 4xx refusal can be tried again later, a 5xx one needs a change first.",
            "Lesen Sie die Antwort des Servers in der Meldung: Eine 4xx-Ablehnung kann später erneut versucht werden, eine 5xx-Ablehnung erfordert zuerst eine Änderung.",
        ),
        (ErrorKind::Limit, _) => own(
            "",
            format!("Eine eingestellte Grenze wurde überschritten ({stage_de})."),
            "Raise the limit the message names, or remove the oversized item.",
            "Erhöhen Sie die in der Meldung genannte Grenze oder entfernen Sie das zu große Element.",
        ),
        (ErrorKind::InvalidInput, _) => own(
            "",
            format!("Eine Einstellung oder Eingabe ist ungültig ({stage_de})."),
            "Correct the setting or input the message names.",
            "Korrigieren Sie die in der Meldung genannte Einstellung oder Eingabe.",
        ),
    }
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
    fn a_lost_idle_connection_is_explained_as_such() {
        use crate::error::ServerReply;
        for e in [
            Error::network(Stage::ListMessages, "the server closed the connection while the mailbox was idling (IMAP IDLE); mailplug connects again"),
            Error::network(Stage::ListMessages, "the server ended the idling connection (BYE); mailplug connects again")
                .with_reply(ServerReply::new("BYE", "Server shutting down.")),
        ] {
            let d = explain(&e);
            assert!(d.cause_en.contains("IMAP IDLE") && d.action_en.contains("limits.idle_renew_secs"), "{d:?}");
            assert!(d.cause_de.contains("IMAP IDLE") && d.action_de.contains("limits.idle_renew_secs"), "{d:?}");
        }
        // Other broken connections keep the general explanation.
        let d = explain(&Error::network(Stage::FetchMessage, "the server closed the connection during message download"));
        assert!(!d.cause_en.contains("IDLE"), "{d:?}");
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
        check(
            "the host name does not resolve (failed to lookup address information: Name or service not known)",
            &["does not exist in DNS", "spelling"],
            &["existiert im DNS nicht", "Schreibweise"],
        );
        check("connection timed out", &["timed out", "firewall"], &["Zeitüberschreitung", "Firewall"]);
        check("STARTTLS not offered by the server", &["does not offer STARTTLS", "TLS port"], &["kein STARTTLS"]);
    }

    #[test]
    fn unknown_text_gives_none() {
        assert_eq!(diagnose("250 OK"), None);
        assert_eq!(diagnose("* OK IMAP4rev1 ready"), None);
        assert_eq!(diagnose(""), None);
    }

    use crate::error::{Error, ServerReply};

    #[track_caller]
    fn check_explain(e: &Error, en: &[&str], de: &[&str]) {
        let d = explain(e);
        let en_all = format!("{} | {}", d.cause_en, d.action_en);
        let de_all = format!("{} | {}", d.cause_de, d.action_de);
        for p in en {
            assert!(en_all.contains(p), "{p:?} missing: {en_all}");
        }
        for p in de {
            assert!(de_all.contains(p), "{p:?} missing: {de_all}");
        }
        assert!(!d.cause_de.is_empty() && !d.action_de.is_empty() && !d.action_en.is_empty());
    }

    #[test]
    fn explain_recognises_provider_replies_before_falling_back() {
        let gmail = Error::auth(Stage::Authenticate, "the server refused the login")
            .with_reply(ServerReply::new("534", "5.7.9 Application-specific password required. https://support.google.com/mail/?p=InvalidSecondFactor"));
        check_explain(&gmail, &["app password"], &["App-Passwort"]);
        let ms = Error::auth(Stage::Authenticate, "the server refused the login")
            .with_reply(ServerReply::new("NO", "AUTHENTICATE failed."));
        check_explain(&ms, &["Microsoft 365", "OAuth2"], &["OAuth2"]);
    }

    #[test]
    fn explain_falls_back_on_kind_and_stage() {
        let wrong_password = Error::auth(Stage::Authenticate, "the server refused the login")
            .with_reply(ServerReply::new("NO", "[AUTHENTICATIONFAILED] Authentication failed."));
        check_explain(&wrong_password, &["refused the login", "password", "app password"], &["Kennwort", "abgelehnt"]);
        let folder = Error::protocol(Stage::SelectMailbox, "the folder \"Nope\" does not exist");
        check_explain(&folder, &["Nope", "folder name"], &["Ordner"]);
        let limit = Error::limit(Stage::FetchMessage, "a message is larger than max-message-bytes");
        check_explain(&limit, &["max-message-bytes", "Raise"], &["Grenze"]);
        let starttls = Error::policy(Stage::Starttls, "the server does not offer STARTTLS, so the password cannot be sent safely");
        check_explain(&starttls, &["does not offer STARTTLS", "TLS port"], &["STARTTLS"]);
    }

    #[test]
    fn explain_names_the_prefix_of_a_server_that_refuses_a_folder_and_a_refused_copy() {
        let refused = crate::imap::namespace::prefix_note(
            Error::protocol(Stage::Data, "the server refused to save the copy in the folder \"Sent\" and answered \"NO Invalid mailbox name.\""),
            "INBOX.",
            "Sent",
            "INBOX.Sent",
        )
        .with_reply(ServerReply::new("NO", "Invalid mailbox name."));
        check_explain(&refused, &["under the prefix \"INBOX.\"", "\"INBOX.Sent\""], &["unter dem Präfix \"INBOX.\"", "Mailprogramm"]);
        let copy = Error::protocol(Stage::Data, "the server refused to save the copy in the folder \"Sent\" and answered \"NO no\"")
            .with_reply(ServerReply::new("NO", "no"));
        check_explain(&copy, &["refused to save the copy", "save_sent"], &["Speichern der Kopie", "gesendet"]);
        let d = explain(&copy);
        assert!(!d.action_en.contains("port"), "not a protocol mix-up: {d:?}");
    }

    #[test]
    fn explain_names_a_wrong_tls_switch_both_ways() {
        let tls_on_starttls_port = Error::tls(Stage::Connect, "received corrupt message of type InvalidContentType");
        check_explain(&tls_on_starttls_port, &["clear text", "TLS switch off"], &["TLS-Schalter aus"]);
        let tls_off_tls_port = Error::timeout(Stage::Greeting, "no greeting within 5 s");
        check_explain(&tls_off_tls_port, &["no greeting", "TLS switch on"], &["TLS-Schalter an"]);
        // The demo host's headline for TLS on against a STARTTLS port (rustls' text is a detail).
        let host_headline = Error::tls(Stage::Connect, "the server did not speak TLS on port 10143: it answered in clear text");
        check_explain(&host_headline, &["clear text", "TLS switch off"], &["TLS-Schalter aus"]);
        let silent_after_tls = Error::timeout(Stage::Greeting, "the server sent no greeting within 10 s after the TLS handshake");
        let d = explain(&silent_after_tls);
        assert!(!d.action_en.contains("TLS switch on"), "{d:?}");
    }

    #[test]
    fn explain_covers_connection_and_certificate_failures() {
        let refused = Error::network(Stage::Connect, "connection refused: nothing listens on this port");
        check_explain(&refused, &["refused", "port"], &["abgelehnt", "Port"]);
        let untrusted = Error::tls(Stage::Connect, "invalid peer certificate: UnknownIssuer");
        check_explain(&untrusted, &["certificate authority"], &["Zertifizierungsstelle"]);
        let timeout = Error::timeout(Stage::Connect, "no TCP connection within 10 s");
        check_explain(&timeout, &["did not answer in time"], &["nicht rechtzeitig"]);
    }
}
