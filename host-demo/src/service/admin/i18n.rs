//! The admin page's languages: English and German. Every visible string of the pages is a key
//! of `CATALOG` with both texts; the language comes from `?lang=`, then the `mailplug_lang`
//! cookie, then the browser's Accept-Language, else English.

use axum::http::{header, HeaderMap};

/// The admin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    De,
}

/// The cookie that keeps the language chosen with `?lang=`.
pub const LANG_COOKIE: &str = "mailplug_lang";

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    /// The language of a request: `query` (from `?lang=`) first, then the cookie, then
    /// Accept-Language; the bool says whether `query` chose it (so the cookie is set).
    pub fn of_request(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
        if let Some(l) = query.and_then(Lang::parse) {
            return (l, true);
        }
        if let Some(l) = super::session::cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
            return (l, false);
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        (Lang::from_accept_language(accept), false)
    }

    /// The best of English and German in an Accept-Language header (by q-value; English when
    /// neither is named).
    pub fn from_accept_language(v: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in v.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let Some(lang) = Lang::parse(primary) else { continue };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    /// The text of `key` in this language; the key itself when the catalogue lacks it (a unit
    /// test keeps every key the templates use in the catalogue).
    pub fn t(self, key: &str) -> &'static str {
        match CATALOG.iter().find(|(k, _, _)| *k == key) {
            Some((_, en, de)) => match self {
                Lang::En => en,
                Lang::De => de,
            },
            None => "?",
        }
    }

    /// One of two texts (English, German), for texts that come with both (the component's
    /// explanations).
    pub fn pick<'a>(self, en: &'a str, de: &'a str) -> &'a str {
        match self {
            Lang::En => en,
            Lang::De => de,
        }
    }
}

/// (key, English, German).
pub static CATALOG: &[(&str, &str, &str)] = &[
    // The frame.
    ("app.title", "mailplug admin", "mailplug-Verwaltung"),
    ("nav.overview", "Overview", "Übersicht"),
    ("nav.new-server", "Add a mail server", "Mailserver hinzufügen"),
    ("nav.logout", "Sign out", "Abmelden"),
    ("nav.language", "Language", "Sprache"),
    ("nav.skip", "Skip to the content", "Zum Inhalt springen"),
    ("tenant", "Tenant", "Mandant"),
    // Login.
    ("login.title", "Sign in", "Anmelden"),
    ("login.intro", "Sign in with the tenant's API token (api_token_file) or its admin page password (admin_password_file).", "Melden Sie sich mit dem API-Token des Mandanten (api_token_file) oder dem Passwort seiner Verwaltungsseite (admin_password_file) an."),
    ("login.token", "API token or admin password", "API-Token oder Verwaltungspasswort"),
    ("login.submit", "Sign in", "Anmelden"),
    ("login.failed", "The token or password is wrong, or this tenant does not exist.", "Das Token oder Passwort ist falsch, oder diesen Mandanten gibt es nicht."),
    ("login.limited", "Too many failed sign-ins for this tenant. Wait a minute and try again.", "Zu viele fehlgeschlagene Anmeldungen für diesen Mandanten. Warten Sie eine Minute und versuchen Sie es erneut."),
    ("login.expired", "The sign-in form was too old or opened in another window. Please sign in again.", "Das Anmeldeformular war zu alt oder wurde in einem anderen Fenster geöffnet. Bitte melden Sie sich erneut an."),
    ("login.busy", "Too many open sessions. Try again later.", "Zu viele offene Sitzungen. Versuchen Sie es später erneut."),
    ("logout.done", "You are signed out.", "Sie sind abgemeldet."),
    // Errors.
    ("error.csrf", "The form was too old or came from another page (CSRF check). Reload the page and try again; nothing was saved.", "Das Formular war zu alt oder kam von einer anderen Seite (CSRF-Prüfung). Laden Sie die Seite neu und versuchen Sie es erneut; nichts wurde gespeichert."),
    ("error.not-found", "Not found.", "Nicht gefunden."),
    ("error.title", "Error", "Fehler"),
    // Overview.
    ("overview.title", "Overview", "Übersicht"),
    ("overview.refresh", "Refresh", "Aktualisieren"),
    ("overview.as-of", "State as of", "Stand"),
    ("overview.mailboxes", "Mailboxes", "Postfächer"),
    ("overview.queues", "Queues (outgoing mail)", "Warteschlangen (ausgehende Mail)"),
    ("overview.no-mailboxes", "No mailboxes yet.", "Noch keine Postfächer."),
    ("overview.no-queues", "No queues yet.", "Noch keine Warteschlangen."),
    ("overview.config-error", "The tenant's file was changed but is invalid; the previous version keeps running. The error:", "Die Datei des Mandanten wurde geändert, ist aber ungültig; die vorige Fassung läuft weiter. Der Fehler:"),
    ("col.name", "Name", "Name"),
    ("col.protocol", "Protocol", "Protokoll"),
    ("col.server", "Server", "Server"),
    ("col.state", "State", "Zustand"),
    ("col.last-error", "Last error", "Letzter Fehler"),
    ("col.next", "Next attempt", "Nächster Versuch"),
    ("col.last-success", "Last success", "Letzter Erfolg"),
    ("col.fetched", "Fetched", "Abgerufen"),
    ("col.mailboxes", "Mailboxes served", "Bediente Postfächer"),
    ("col.actions", "Actions", "Aktionen"),
    ("state.connecting", "connecting", "verbindet"),
    ("state.polling", "connected (fetching)", "verbunden (ruft ab)"),
    ("state.idling", "connected (idle: new mail arrives at once)", "verbunden (IDLE: neue Mail kommt sofort)"),
    ("state.waiting", "idle (waiting for the next poll)", "wartet (auf den nächsten Abruf)"),
    ("state.backing-off", "backing off after an error", "pausiert nach einem Fehler"),
    ("state.waiting-for-fix", "error: waiting for a fix of the settings", "Fehler: wartet auf eine Korrektur der Einstellungen"),
    ("state.attempt", "attempt", "Versuch"),
    ("next.after-fix", "after the settings are changed", "nach einer Änderung der Einstellungen"),
    ("next.now", "now", "jetzt"),
    ("next.on-mail", "as soon as new mail arrives", "sobald neue Mail ankommt"),
    ("never", "never", "nie"),
    ("none", "none", "keiner"),
    ("action.edit", "Edit server", "Server bearbeiten"),
    ("action.queue", "Open queue", "Warteschlange öffnen"),
    ("js.updated", "updated", "aktualisiert"),
    // The mail-server form.
    ("form.title-new", "Add a mail server", "Mailserver hinzufügen"),
    ("form.title-edit", "Edit mail server", "Mailserver bearbeiten"),
    ("form.preset", "Provider preset", "Anbieter-Vorlage"),
    ("form.preset-none", "(enter the settings by hand)", "(Einstellungen von Hand eingeben)"),
    ("form.preset-apply", "Apply preset", "Vorlage übernehmen"),
    ("form.preset-help", "Fills protocol, server, port, TLS and sign-in with the provider's recommended settings.", "Füllt Protokoll, Server, Port, TLS und Anmeldung mit den empfohlenen Einstellungen des Anbieters."),
    ("form.discover-email", "Find the settings for an e-mail address", "Einstellungen zu einer E-Mail-Adresse suchen"),
    ("form.discover", "Find settings", "Einstellungen suchen"),
    ("form.discover-none", "Nothing found for this address; enter the settings by hand.", "Für diese Adresse wurde nichts gefunden; geben Sie die Einstellungen von Hand ein."),
    ("form.discover-found", "Settings found and filled in; check them before saving.", "Einstellungen gefunden und eingetragen; prüfen Sie sie vor dem Speichern."),
    ("form.name", "Name (id)", "Name (Kennung)"),
    ("form.name-help", "Letters, digits, '-', '_' and '.'; cannot be changed later.", "Buchstaben, Ziffern, '-', '_' und '.'; später nicht änderbar."),
    ("form.address", "E-mail address of the mailbox", "E-Mail-Adresse des Postfachs"),
    ("form.protocol", "Protocol", "Protokoll"),
    ("form.protocol-smtp-help", "SMTP servers send the replies of a queue (outgoing mail).", "SMTP-Server versenden die Antworten einer Warteschlange (ausgehende Mail)."),
    ("form.host", "Server (host name)", "Server (Hostname)"),
    ("form.port", "Port", "Port"),
    ("form.tls", "TLS", "TLS"),
    ("form.tls-help", "On: encrypted from the first byte (ports 993 IMAP, 995 POP3, 465 SMTP). Off: the connection starts plain and switches to encryption with STARTTLS before the login (ports 143 IMAP, 110 POP3, 587 SMTP).", "An: verschlüsselt ab dem ersten Byte (Ports 993 IMAP, 995 POP3, 465 SMTP). Aus: die Verbindung beginnt unverschlüsselt und wechselt vor der Anmeldung mit STARTTLS zur Verschlüsselung (Ports 143 IMAP, 110 POP3, 587 SMTP)."),
    ("form.auth", "Authentication", "Authentifizierung"),
    ("form.auth-basic", "Basic (user name and password)", "Basic (Benutzername und Passwort)"),
    ("form.auth-oauth2", "OAuth2 (token from the provider)", "OAuth2 (Token vom Anbieter)"),
    ("form.oauth-client", "OAuth2 client", "OAuth2-Client"),
    ("form.oauth-client-none", "This tenant has no OAuth2 client ([oauth.NAME] in its file); add one before choosing OAuth2.", "Dieser Mandant hat keinen OAuth2-Client ([oauth.NAME] in seiner Datei); legen Sie einen an, bevor Sie OAuth2 wählen."),
    ("form.username", "User name", "Benutzername"),
    ("form.password", "Password", "Passwort"),
    ("form.password-help-new", "Stored in a file only the service can read; never shown again.", "Wird in einer Datei gespeichert, die nur der Dienst lesen kann; wird nie wieder angezeigt."),
    ("form.password-help-edit", "Leave empty to keep the stored password. It is never shown.", "Leer lassen, um das gespeicherte Passwort zu behalten. Es wird nie angezeigt."),
    ("form.findings", "Checks of these settings", "Prüfungen dieser Einstellungen"),
    ("form.findings-none", "No problems found.", "Keine Probleme gefunden."),
    ("form.findings-nojs", "The checks run when you save (and as you type, with JavaScript).", "Die Prüfungen laufen beim Speichern (und mit JavaScript schon beim Tippen)."),
    ("form.save", "Save", "Speichern"),
    ("form.saved", "Saved. The service uses the new settings within a few seconds, without a restart.", "Gespeichert. Der Dienst verwendet die neuen Einstellungen in wenigen Sekunden, ohne Neustart."),
    ("form.errors", "The settings were not saved:", "Die Einstellungen wurden nicht gespeichert:"),
    ("severity.error", "Error", "Fehler"),
    ("severity.warning", "Warning", "Warnung"),
    ("err.name", "Enter a name of letters, digits, '-', '_' or '.' (at most 64 characters).", "Geben Sie einen Namen aus Buchstaben, Ziffern, '-', '_' oder '.' ein (höchstens 64 Zeichen)."),
    ("err.name-taken", "A mail server with this name exists already; choose another name.", "Einen Mailserver mit diesem Namen gibt es schon; wählen Sie einen anderen Namen."),
    ("err.address", "Enter the mailbox's e-mail address (name@example.com).", "Geben Sie die E-Mail-Adresse des Postfachs ein (name@example.com)."),
    ("err.protocol", "Choose POP3, IMAP or SMTP.", "Wählen Sie POP3, IMAP oder SMTP."),
    ("err.protocol-change", "An incoming mailbox (POP3/IMAP) cannot become an SMTP server or the other way round; add a new mail server instead.", "Ein Eingangspostfach (POP3/IMAP) kann nicht zum SMTP-Server werden und umgekehrt; legen Sie stattdessen einen neuen Mailserver an."),
    ("err.host", "Enter the server's host name, e.g. imap.example.com.", "Geben Sie den Hostnamen des Servers ein, z. B. imap.example.com."),
    ("err.port", "Enter a port between 1 and 65535.", "Geben Sie einen Port zwischen 1 und 65535 ein."),
    ("err.username", "Enter the user name.", "Geben Sie den Benutzernamen ein."),
    ("err.password", "Basic authentication needs a password.", "Basic-Authentifizierung braucht ein Passwort."),
    ("err.oauth-client", "Choose the OAuth2 client this server signs in with.", "Wählen Sie den OAuth2-Client, mit dem sich dieser Server anmeldet."),
    ("err.file", "The tenant's file could not be changed:", "Die Datei des Mandanten konnte nicht geändert werden:"),
    ("err.config", "The changed file would not be valid:", "Die geänderte Datei wäre ungültig:"),
    // F: "Test connection", "Connect account" and the queue page (check.rs, connect.rs, queue.rs).
    ("check.title", "Test connection", "Verbindung testen"),
    ("check.intro", "Runs the same check as `mailplug check` with the saved settings: it connects and signs in, and fetches, sends and changes nothing.", "Führt dieselbe Prüfung wie `mailplug check` mit den gespeicherten Einstellungen aus: Sie verbindet sich und meldet sich an, holt, sendet und ändert aber nichts."),
    ("check.button", "Test connection", "Verbindung testen"),
    ("check.nojs", "The live check needs JavaScript; without it, run `mailplug check` on the server.", "Die Live-Prüfung braucht JavaScript; ohne JavaScript führen Sie `mailplug check` auf dem Server aus."),
    ("check.running", "running", "läuft"),
    ("check.ok", "ok", "ok"),
    ("check.failed-step", "failed", "fehlgeschlagen"),
    ("check.waiting", "Starting the check…", "Die Prüfung startet …"),
    ("check.passed", "Every step succeeded: the settings work.", "Alle Schritte waren erfolgreich: Die Einstellungen funktionieren."),
    ("check.failed", "The check failed; see the failed step.", "Die Prüfung ist fehlgeschlagen; siehe den fehlgeschlagenen Schritt."),
    ("check.cause", "Why:", "Ursache:"),
    ("check.action", "What to do:", "Was zu tun ist:"),
    ("check.step.settings", "Settings", "Einstellungen"),
    ("check.step.token", "OAuth2 token", "OAuth2-Token"),
    ("check.step.resolve", "Resolve the host name", "Hostnamen auflösen"),
    ("check.step.connect", "Connect", "Verbinden"),
    ("check.step.tls", "TLS handshake", "TLS-Handshake"),
    ("check.step.greeting", "Server greeting", "Begrüßung des Servers"),
    ("check.step.capabilities", "Capabilities", "Fähigkeiten"),
    ("check.step.starttls", "STARTTLS", "STARTTLS"),
    ("check.step.mechanisms", "Sign-in methods", "Anmeldeverfahren"),
    ("check.step.login", "Sign in", "Anmelden"),
    ("check.step.folder", "Open the folder", "Ordner öffnen"),
    ("check.step.envelope", "Sender accepted (MAIL FROM)", "Absender angenommen (MAIL FROM)"),
    ("check.step.reset", "Reset (nothing sent)", "Zurücksetzen (nichts gesendet)"),
    ("check.step.logout", "Sign out", "Abmelden"),
    ("check.step.session", "Protocol step", "Protokollschritt"),
    ("connect.title", "Connect account (OAuth2)", "Konto verbinden (OAuth2)"),
    ("connect.intro", "Signs in at the provider and stores the tokens encrypted; you come back to this page.", "Meldet sich beim Anbieter an und speichert die Tokens verschlüsselt; danach kommen Sie auf diese Seite zurück."),
    ("connect.button", "Connect account", "Konto verbinden"),
    ("connect.done", "The account is connected: the tokens are stored.", "Das Konto ist verbunden: Die Tokens sind gespeichert."),
    ("connect.failed", "The account could not be connected.", "Das Konto konnte nicht verbunden werden."),
    ("connect.not-oauth", "This mailbox signs in with a password; choose OAuth2 and save before connecting an account.", "Dieses Postfach meldet sich mit Passwort an; wählen Sie OAuth2 und speichern Sie, bevor Sie ein Konto verbinden."),
    ("connect.busy", "Too many sign-ins are in progress; try again in a few minutes.", "Zu viele Anmeldungen laufen gerade; versuchen Sie es in einigen Minuten erneut."),
    ("connect.expired", "This sign-in is unknown, was used already or took too long. Start it again with \"Connect account\".", "Diese Anmeldung ist unbekannt, wurde schon verwendet oder hat zu lange gedauert. Starten Sie sie erneut mit „Konto verbinden“."),
    ("connect.returning", "Returning to the admin page…", "Zurück zur Verwaltungsseite …"),
    ("connect.continue", "Continue", "Weiter"),
    ("connect.to-provider", "Opening the provider's sign-in page…", "Die Anmeldeseite des Anbieters wird geöffnet …"),
    ("token.state", "Token", "Token"),
    ("token.valid", "valid", "gültig"),
    ("token.expiring", "expired or due; it is refreshed at the next use", "abgelaufen oder fällig; wird bei der nächsten Verwendung erneuert"),
    ("token.expired", "expired, and no refresh token: connect the account again", "abgelaufen, und kein Refresh-Token: Verbinden Sie das Konto erneut"),
    ("token.missing", "not connected yet: press \"Connect account\"", "noch nicht verbunden: Drücken Sie „Konto verbinden“"),
    ("token.unreadable", "the stored tokens cannot be read", "die gespeicherten Tokens können nicht gelesen werden"),
    ("token.valid-until", "Valid until", "Gültig bis"),
    ("token.scopes", "Scopes", "Berechtigungen (Scopes)"),
    ("token.scopes-as-granted", "as granted (the provider named none)", "wie erteilt (der Anbieter nannte keine)"),
    ("token.refresh", "Refresh token", "Refresh-Token"),
    ("token.refresh-yes", "present", "vorhanden"),
    ("token.refresh-no", "none", "keines"),
    ("token.account", "Account", "Konto"),
    ("token.problem", "Problem", "Problem"),
    ("queue.title", "Queue", "Warteschlange"),
    ("queue.name", "Queue", "Warteschlange"),
    ("queue.smtp-server", "SMTP server", "SMTP-Server"),
    ("queue.smtp-server-help", "The server and account this queue sends with (any queue's SMTP server of this tenant).", "Server und Konto, mit denen diese Warteschlange sendet (der SMTP-Server einer beliebigen Warteschlange dieses Mandanten)."),
    ("queue.mailboxes", "Mailboxes whose replies this queue sends", "Postfächer, deren Antworten diese Warteschlange sendet"),
    ("queue.permission", "Send permission of the SMTP account", "Sendeberechtigung des SMTP-Kontos"),
    ("queue.permission-none", "none (sends as itself, Reply-To the mailbox)", "keine (sendet als es selbst, Reply-To an das Postfach)"),
    ("queue.permission-on-behalf", "send on behalf", "senden im Auftrag"),
    ("queue.permission-as", "send as", "senden als"),
    ("queue.permission-help", "What the mail server lets the SMTP account do for the mailboxes' addresses (Exchange: \"Send on behalf\" / \"Send as\").", "Was der Mailserver dem SMTP-Konto für die Adressen der Postfächer erlaubt (Exchange: „Senden im Auftrag von“ / „Senden als“)."),
    ("queue.aliases", "Gmail aliases", "Gmail-Aliasse"),
    ("queue.aliases-help", "Gmail only: mailbox addresses verified as \"Send mail as\" aliases of the SMTP account, one per line.", "Nur Gmail: Adressen der Postfächer, die als „Senden als“-Aliasse des SMTP-Kontos bestätigt sind, eine pro Zeile."),
    ("queue.preview", "What the customer sees", "Was der Kunde sieht"),
    ("queue.preview-help", "How a reply from each mailbox will be addressed with the values above (updated as you change them; nothing is saved until you press Save).", "Wie eine Antwort aus jedem Postfach mit den obigen Werten adressiert wird (wird beim Ändern aktualisiert; gespeichert wird erst mit „Speichern“)."),
    ("queue.preview-none", "Choose the mailboxes this queue serves to see a preview.", "Wählen Sie die Postfächer, die diese Warteschlange bedient, um eine Vorschau zu sehen."),
    ("queue.preview-for", "A reply from", "Eine Antwort von"),
    ("queue.customer-sees", "The customer sees:", "Der Kunde sieht:"),
    ("queue.envelope-from", "Envelope sender (MAIL FROM)", "Umschlag-Absender (MAIL FROM)"),
    ("queue.err-server", "Choose one of the tenant's SMTP servers.", "Wählen Sie einen der SMTP-Server des Mandanten."),
    ("queue.err-mailbox", "There is no such mailbox.", "Dieses Postfach gibt es nicht."),
    ("queue.err-permission", "Choose none, send on behalf or send as.", "Wählen Sie keine, senden im Auftrag oder senden als."),
    ("queue.err-alias", "An alias must be an e-mail address (name@example.com).", "Ein Alias muss eine E-Mail-Adresse sein (name@example.com)."),
    ("queue.err-aliases-many", "At most 100 aliases.", "Höchstens 100 Aliasse."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_both_languages_once() {
        let mut seen = std::collections::HashSet::new();
        for (k, en, de) in CATALOG {
            assert!(seen.insert(*k), "key {k} twice");
            assert!(!en.trim().is_empty() && !de.trim().is_empty(), "key {k} lacks a text");
        }
    }

    #[test]
    fn every_key_the_templates_and_the_code_use_is_in_the_catalogue() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        for dir in ["templates/admin", "src/service/admin"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
                if e.file_name() == "i18n.rs" {
                    continue;
                }
                files.push(e.path());
            }
        }
        let mut used = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for marker in [".t(\"", "tr(\""] {
                for (i, _) in text.match_indices(marker) {
                    let rest = &text[i + marker.len()..];
                    let key = &rest[..rest.find('"').unwrap()];
                    if key.is_empty() || key.contains(' ') || key.contains('{') {
                        continue;
                    }
                    used += 1;
                    assert!(CATALOG.iter().any(|(k, _, _)| *k == key), "{}: key {key} is not in the catalogue", f.display());
                }
            }
        }
        assert!(used > 20, "the scan found the keys ({used})");
    }

    #[test]
    fn the_language_comes_from_the_query_then_the_cookie_then_accept_language() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::of_request(None, &h), (Lang::En, false));
        h.insert(header::ACCEPT_LANGUAGE, "fr-CH, de;q=0.8, en;q=0.5".parse().unwrap());
        assert_eq!(Lang::of_request(None, &h), (Lang::De, false));
        h.insert(header::COOKIE, "x=1; mailplug_lang=en".parse().unwrap());
        assert_eq!(Lang::of_request(None, &h), (Lang::En, false));
        assert_eq!(Lang::of_request(Some("de"), &h), (Lang::De, true));
        assert_eq!(Lang::of_request(Some("xx"), &h), (Lang::En, false));
        assert_eq!(Lang::from_accept_language("de-DE"), Lang::De);
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9,de;q=0.8"), Lang::En);
        assert_eq!(Lang::from_accept_language("de;q=0, en;q=0.1"), Lang::En);
        assert_eq!(Lang::from_accept_language("garbage;;;q=x"), Lang::En);
        assert_eq!(Lang::De.t("form.save"), "Speichern");
        assert_eq!(Lang::En.t("no.such.key"), "?");
    }
}
