//! The preset data. Values are from the providers' public help pages (URL in `source`); the
//! Gmail and Microsoft 365 entries follow the product spec with its errata applied.

use super::{AuthSupport, Note, Preset, Proto, ServerPreset, UsernameForm};
use crate::plan::Provider;

const GOOGLE: AuthSupport = AuthSupport::OAuth2 { provider: "google" };
const MICROSOFT: AuthSupport = AuthSupport::OAuth2 { provider: "microsoft" };

fn tls(host: &str, port: u16) -> Option<ServerPreset> {
    Some(ServerPreset { host: host.to_string(), port, tls: true })
}

fn starttls(host: &str, port: u16) -> Option<ServerPreset> {
    Some(ServerPreset { host: host.to_string(), port, tls: false })
}

fn note(en: &str, de: &str) -> Note {
    Note { en: en.to_string(), de: de.to_string() }
}

fn enable_access(name: &str, where_en: &str, where_de: &str) -> Note {
    note(
        &format!("Turn on POP3/IMAP access in the {name} web settings ({where_en}) first; it is off by default."),
        &format!("Schalten Sie zuerst den POP3/IMAP-Zugriff in den {name}-Einstellungen im Web ein ({where_de}); er ist standardmäßig aus."),
    )
}

pub(super) fn entries() -> Vec<Preset> {
    vec![
        Preset {
            id: "gmail",
            name: "Gmail / Google Workspace",
            domains: vec!["gmail.com", "googlemail.com"],
            pop3: tls("pop.gmail.com", 995),
            imap: tls("imap.gmail.com", 993),
            smtp: starttls("smtp.gmail.com", 587),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired, GOOGLE],
            smtp_provider: Provider::Gmail,
            notes: vec![
                note(
                    "Basic sign-in needs an app password: turn on 2-Step Verification for the Google account, then create an app password (Google account > Security > App passwords). The normal Google password is refused.",
                    "Die Anmeldung mit Basic braucht ein App-Passwort: Aktivieren Sie die Bestätigung in zwei Schritten für das Google-Konto und erstellen Sie dann ein App-Passwort (Google-Konto > Sicherheit > App-Passwörter). Das normale Google-Passwort wird abgelehnt.",
                ),
                note(
                    "For POP3, turn on POP in Gmail (Settings > See all settings > Forwarding and POP/IMAP).",
                    "Für POP3 aktivieren Sie POP in Gmail (Einstellungen > Alle Einstellungen aufrufen > Weiterleitung und POP/IMAP).",
                ),
                note(
                    "Google Workspace domains use the same servers; sign in with the full address.",
                    "Google-Workspace-Domains nutzen dieselben Server; melden Sie sich mit der vollständigen Adresse an.",
                ),
            ],
            source: "spec + errata (imap.gmail.com, not \"impa.gmail.com\"; Basic only with an app password, which needs 2-Step Verification; smtp.gmail.com also takes 465 with TLS); https://support.google.com/mail/answer/7126229, https://support.google.com/accounts/answer/185833",
        },
        Preset {
            id: "microsoft365",
            name: "Microsoft 365 (Exchange Online)",
            // Customers' own domains: found by MX later.
            domains: vec![],
            pop3: tls("outlook.office365.com", 995),
            imap: tls("outlook.office365.com", 993),
            smtp: starttls("smtp.office365.com", 587),
            username: UsernameForm::FullAddress,
            auth: vec![MICROSOFT],
            smtp_provider: Provider::Microsoft,
            notes: vec![
                note(
                    "Use OAuth2: Microsoft turned Basic (password) sign-in off for POP and IMAP in 2022 and is switching it off for SMTP AUTH.",
                    "Verwenden Sie OAuth2: Microsoft hat die Basic-Anmeldung (Passwort) für POP und IMAP 2022 abgeschaltet und schaltet sie auch für SMTP AUTH ab.",
                ),
                note(
                    "POP/IMAP and authenticated SMTP (SMTP AUTH) must be enabled for the mailbox in the Microsoft 365 admin center (Mail apps).",
                    "POP/IMAP und authentifiziertes SMTP (SMTP AUTH) müssen für das Postfach im Microsoft 365 Admin Center aktiviert sein (E-Mail-Apps).",
                ),
                note(
                    "Sending for another mailbox needs a Send As or Send on Behalf permission in Exchange.",
                    "Das Senden für ein anderes Postfach braucht eine Berechtigung \"Senden als\" oder \"Senden im Auftrag von\" in Exchange.",
                ),
            ],
            source: "spec + errata (smtp.office365.com:587 is STARTTLS, not TLS; Basic retired for POP/IMAP, OAuth2 for all three); https://support.microsoft.com/en-us/office/pop-imap-and-smtp-settings-8361e398-8af4-4e97-b147-6c6c4ac95353",
        },
        Preset {
            id: "outlook",
            name: "Outlook.com / Hotmail",
            domains: vec![
                "outlook.com", "hotmail.com", "live.com", "msn.com", "outlook.de", "hotmail.de",
                "live.de", "outlook.fr", "hotmail.fr", "live.fr", "hotmail.co.uk", "live.co.uk",
                "outlook.at", "hotmail.at", "live.at", "hotmail.ch", "outlook.it", "hotmail.it",
                "outlook.es", "hotmail.es", "windowslive.com", "passport.com",
            ],
            pop3: tls("outlook.office365.com", 995),
            imap: tls("outlook.office365.com", 993),
            smtp: starttls("smtp-mail.outlook.com", 587),
            username: UsernameForm::FullAddress,
            auth: vec![MICROSOFT],
            smtp_provider: Provider::Microsoft,
            notes: vec![
                note(
                    "Use OAuth2: Outlook.com no longer accepts passwords or app passwords from mail programs (since September 2024).",
                    "Verwenden Sie OAuth2: Outlook.com nimmt seit September 2024 keine Passwörter oder App-Passwörter von E-Mail-Programmen mehr an.",
                ),
                note(
                    "For POP3, turn on POP in Outlook.com (Settings > Mail > Forwarding and IMAP).",
                    "Für POP3 aktivieren Sie POP in Outlook.com (Einstellungen > E-Mail > Weiterleitung und IMAP).",
                ),
            ],
            source: "https://support.microsoft.com/en-us/office/pop-imap-and-smtp-settings-for-outlook-com-d088b986-291d-42b8-9564-9c414e2aa040",
        },
        Preset {
            id: "yahoo",
            name: "Yahoo Mail",
            domains: vec![
                "yahoo.com", "yahoo.de", "yahoo.co.uk", "yahoo.fr", "yahoo.it", "yahoo.es",
                "yahoo.se", "yahoo.co.nz", "yahoo.com.au", "yahoo.com.ar", "yahoo.com.br",
                "yahoo.com.mx", "ymail.com", "rocketmail.com",
            ],
            pop3: tls("pop.mail.yahoo.com", 995),
            imap: tls("imap.mail.yahoo.com", 993),
            smtp: tls("smtp.mail.yahoo.com", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "Create an app password (Yahoo account > Account security > Generate app password) and use it instead of the normal password.",
                "Erstellen Sie ein App-Passwort (Yahoo-Konto > Kontosicherheit > App-Passwort generieren) und verwenden Sie es statt des normalen Passworts.",
            )],
            source: "https://help.yahoo.com/kb/SLN4075.html",
        },
        Preset {
            id: "aol",
            name: "AOL Mail",
            domains: vec!["aol.com", "aol.de", "aim.com"],
            pop3: tls("pop.aol.com", 995),
            imap: tls("imap.aol.com", 993),
            smtp: tls("smtp.aol.com", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "Create an app password (AOL account > Account security > Generate app password) and use it instead of the normal password.",
                "Erstellen Sie ein App-Passwort (AOL-Konto > Kontosicherheit > App-Passwort generieren) und verwenden Sie es statt des normalen Passworts.",
            )],
            source: "https://help.aol.com/articles/how-do-i-use-other-email-applications-to-send-and-receive-my-aol-mail",
        },
        Preset {
            id: "icloud",
            name: "iCloud Mail",
            domains: vec!["icloud.com", "me.com", "mac.com"],
            pop3: None,
            imap: tls("imap.mail.me.com", 993),
            smtp: starttls("smtp.mail.me.com", 587),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired],
            smtp_provider: Provider::Generic,
            notes: vec![
                note(
                    "iCloud Mail has no POP3: use IMAP.",
                    "iCloud Mail bietet kein POP3: Verwenden Sie IMAP.",
                ),
                note(
                    "Create an app-specific password (appleid.apple.com > Sign-In and Security > App-Specific Passwords); it needs two-factor authentication.",
                    "Erstellen Sie ein app-spezifisches Passwort (appleid.apple.com > Anmeldung und Sicherheit > App-spezifische Passwörter); dafür ist die Zwei-Faktor-Authentifizierung nötig.",
                ),
            ],
            source: "https://support.apple.com/en-us/102525",
        },
        Preset {
            id: "gmx",
            name: "GMX",
            domains: vec!["gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.com", "gmx.eu", "gmx.org", "gmx.info", "gmx.biz"],
            pop3: tls("pop.gmx.net", 995),
            imap: tls("imap.gmx.net", 993),
            smtp: starttls("mail.gmx.net", 587),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![enable_access(
                "GMX",
                "E-Mail > Settings > POP3 & IMAP",
                "E-Mail > Einstellungen > POP3 & IMAP",
            )],
            source: "https://hilfe.gmx.net/pop-imap/imap/imap-serverdaten.html",
        },
        Preset {
            id: "webde",
            name: "WEB.DE",
            domains: vec!["web.de", "email.de"],
            pop3: tls("pop3.web.de", 995),
            imap: tls("imap.web.de", 993),
            smtp: starttls("smtp.web.de", 587),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![enable_access(
                "WEB.DE",
                "E-Mail > Settings > POP3 & IMAP",
                "E-Mail > Einstellungen > POP3 & IMAP",
            )],
            source: "https://hilfe.web.de/pop-imap/imap/imap-serverdaten.html",
        },
        Preset {
            id: "t-online",
            name: "T-Online (Telekom)",
            domains: vec!["t-online.de", "magenta.de"],
            pop3: tls("securepop.t-online.de", 995),
            imap: tls("secureimap.t-online.de", 993),
            smtp: tls("securesmtp.t-online.de", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "Mail programs need the separate password for e-mail programs, not the Telekom login password: set it in the T-Online mail web settings (Settings > Passwords > Password for e-mail programs).",
                "E-Mail-Programme brauchen das eigene Passwort für E-Mail-Programme, nicht das Telekom-Login-Passwort: Legen Sie es in den Einstellungen von T-Online E-Mail fest (Einstellungen > Passwörter > Passwort für E-Mail-Programme).",
            )],
            source: "https://www.telekom.de/hilfe/festnetz-internet-tv/e-mail/e-mail-server-e-mail-protokolle-und-e-mail-einrichtung/posteingangsserver-und-postausgangsserver",
        },
        Preset {
            id: "ionos",
            name: "IONOS (formerly 1&1)",
            // Customers' own domains.
            domains: vec![],
            pop3: tls("pop.ionos.de", 995),
            imap: tls("imap.ionos.de", 993),
            smtp: tls("smtp.ionos.de", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "IONOS hosts your own domain: sign in with the mailbox's full address and its mailbox password (set in the IONOS control panel under E-Mail).",
                "IONOS betreibt Ihre eigene Domain: Melden Sie sich mit der vollständigen Adresse des Postfachs und seinem Postfach-Passwort an (im IONOS Control Panel unter E-Mail festgelegt).",
            )],
            source: "https://www.ionos.de/hilfe/e-mail/allgemeine-themen/serverinformationen-fuer-imap-pop3-und-smtp/",
        },
        Preset {
            id: "strato",
            name: "STRATO",
            // Customers' own domains.
            domains: vec![],
            pop3: tls("pop3.strato.de", 995),
            imap: tls("imap.strato.de", 993),
            smtp: tls("smtp.strato.de", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "STRATO hosts your own domain: sign in with the mailbox's full address and its mailbox password.",
                "STRATO betreibt Ihre eigene Domain: Melden Sie sich mit der vollständigen Adresse des Postfachs und seinem Postfach-Passwort an.",
            )],
            source: "https://www.strato.de/faq/mail/mit-welchen-servern-ports-kann-ich-mich-verbinden/",
        },
        Preset {
            id: "mailbox-org",
            name: "mailbox.org",
            domains: vec!["mailbox.org"],
            pop3: tls("pop3.mailbox.org", 995),
            imap: tls("imap.mailbox.org", 993),
            smtp: tls("smtp.mailbox.org", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "If two-factor authentication is on, create an app password for the mail program and use it instead.",
                "Ist die Zwei-Faktor-Authentifizierung aktiv, erstellen Sie ein App-Passwort für das E-Mail-Programm und verwenden Sie dieses.",
            )],
            source: "https://kb.mailbox.org/en/private/e-mail-article/mailbox-org-e-mail-server-settings",
        },
        Preset {
            id: "posteo",
            name: "Posteo",
            domains: vec![
                "posteo.de", "posteo.net", "posteo.at", "posteo.ch", "posteo.eu", "posteo.org",
                "posteo.com", "posteo.me", "posteo.nl", "posteo.be", "posteo.es", "posteo.it",
                "posteo.uk", "posteo.co.uk", "posteo.us", "posteo.jp", "posteo.se", "posteo.dk",
                "posteo.no", "posteo.fi", "posteo.pl",
            ],
            pop3: tls("posteo.de", 995),
            imap: tls("posteo.de", 993),
            smtp: starttls("posteo.de", 587),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "Create an app password for the mail program (Posteo settings > Security > App passwords) and use it instead of the login password.",
                "Erstellen Sie ein App-Passwort für das E-Mail-Programm (Posteo-Einstellungen > Sicherheit > App-Passwörter) und verwenden Sie es statt des Login-Passworts.",
            )],
            source: "https://posteo.de/en/help/how-do-i-set-up-posteo-in-an-email-client-pop3-imap-and-smtp, https://posteo.de/en/help/app-passwords",
        },
        Preset {
            id: "fastmail",
            name: "Fastmail",
            domains: vec![
                "fastmail.com", "fastmail.fm", "fastmail.de", "fastmail.net", "fastmail.org",
                "fastmail.co.uk", "fastmail.uk", "fastmail.us", "fastmail.to", "fastmail.in",
                "fastmail.jp", "fastmail.com.au", "messagingengine.com", "sent.com", "fastem.com",
            ],
            pop3: tls("pop.fastmail.com", 995),
            imap: tls("imap.fastmail.com", 993),
            smtp: tls("smtp.fastmail.com", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::AppPasswordRequired],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "Create an app password with access \"Mail (IMAP/POP/SMTP)\" (Settings > Privacy & Security > Integrations > App passwords); sign in with the address you registered with.",
                "Erstellen Sie ein App-Passwort mit Zugriff \"Mail (IMAP/POP/SMTP)\" (Einstellungen > Datenschutz & Sicherheit > Integrationen > App-Passwörter); melden Sie sich mit der Adresse an, mit der das Konto registriert wurde.",
            )],
            source: "https://www.fastmail.help/hc/en-us/articles/1500000278342-Server-names-and-ports",
        },
        Preset {
            id: "zoho",
            name: "Zoho Mail",
            domains: vec!["zoho.com", "zohomail.com"],
            pop3: tls("pop.zoho.com", 995),
            imap: tls("imap.zoho.com", 993),
            smtp: tls("smtp.zoho.com", 465),
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![
                enable_access("Zoho Mail", "Settings > Mail Accounts > IMAP/POP", "Einstellungen > E-Mail-Konten > IMAP/POP"),
                note(
                    "Accounts of an organisation use imappro.zoho.com, poppro.zoho.com and smtppro.zoho.com; accounts in the EU data centre use zoho.eu instead of zoho.com. With two-factor authentication on, use an application-specific password.",
                    "Konten einer Organisation verwenden imappro.zoho.com, poppro.zoho.com und smtppro.zoho.com; Konten im EU-Rechenzentrum zoho.eu statt zoho.com. Bei aktiver Zwei-Faktor-Authentifizierung verwenden Sie ein anwendungsspezifisches Passwort.",
                ),
            ],
            source: "https://www.zoho.com/mail/help/imap-access.html, https://www.zoho.com/mail/help/pop-access.html",
        },
        Preset {
            id: "generic",
            name: "Other provider",
            domains: vec![],
            pop3: None,
            imap: None,
            smtp: None,
            username: UsernameForm::FullAddress,
            auth: vec![AuthSupport::Basic],
            smtp_provider: Provider::Generic,
            notes: vec![note(
                "Enter the server names, ports and TLS settings from your provider's help pages. Prefer TLS (993, 995, 465) or STARTTLS (143, 110, 587).",
                "Tragen Sie Servernamen, Ports und TLS-Einstellungen aus den Hilfeseiten Ihres Anbieters ein. Bevorzugen Sie TLS (993, 995, 465) oder STARTTLS (143, 110, 587).",
            )],
            source: "none: the admin enters the values",
        },
    ]
}

/// Ports a preset's server also accepts besides the catalogue's recommended one, as
/// (port, implicit TLS). Used to tell a valid alternative from a typo.
pub(crate) fn also_accepted(id: &str, proto: Proto) -> &'static [(u16, bool)] {
    match (id, proto) {
        ("gmail", Proto::Smtp) => &[(465, true)],
        ("yahoo" | "aol" | "t-online" | "ionos" | "strato" | "mailbox-org" | "zoho", Proto::Smtp) => {
            &[(587, false)]
        }
        ("gmx" | "posteo", Proto::Smtp) => &[(465, true)],
        ("gmx" | "webde" | "mailbox-org" | "posteo" | "ionos" | "strato", Proto::Imap) => &[(143, false)],
        ("mailbox-org" | "posteo" | "ionos" | "strato", Proto::Pop3) => &[(110, false)],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::collections::HashSet;

    const IMPLICIT_TLS_PORTS: [u16; 3] = [993, 995, 465];
    const STARTTLS_PORTS: [u16; 3] = [143, 110, 587];

    fn servers(p: &Preset) -> Vec<(Proto, &ServerPreset)> {
        [Proto::Pop3, Proto::Imap, Proto::Smtp]
            .into_iter()
            .filter_map(|proto| p.server(proto).map(|s| (proto, s)))
            .collect()
    }

    #[test]
    fn every_entry_is_consistent() {
        let all = catalogue();
        assert!(all.len() >= 16, "catalogue has {} entries", all.len());
        let mut ids = HashSet::new();
        let mut domains = HashSet::new();
        for p in &all {
            assert!(ids.insert(p.id), "duplicate id {}", p.id);
            assert!(!p.name.is_empty(), "{}: empty name", p.id);
            assert!(!p.source.trim().is_empty(), "{}: no source", p.id);
            assert!(!p.auth.is_empty(), "{}: no sign-in method", p.id);
            for a in &p.auth {
                if let AuthSupport::OAuth2 { provider } = a {
                    assert!(["google", "microsoft"].contains(provider), "{}: OAuth2 provider {provider}", p.id);
                }
            }
            for n in &p.notes {
                assert!(!n.en.trim().is_empty() && !n.de.trim().is_empty(), "{}: half-empty note", p.id);
            }
            for d in &p.domains {
                assert_eq!(*d, d.to_ascii_lowercase(), "{}: domain {d} not lower-case", p.id);
                assert!(!d.is_empty() && d.contains('.') && !d.contains(char::is_whitespace), "{}: bad domain {d:?}", p.id);
                assert!(domains.insert(*d), "domain {d} is in two presets");
            }
            if p.id != "generic" {
                assert!(p.imap.is_some() || p.pop3.is_some(), "{}: no inbound server", p.id);
                assert!(p.smtp.is_some(), "{}: no SMTP server", p.id);
            }
            for (proto, s) in servers(p) {
                assert!(!s.host.is_empty() && s.port != 0, "{}: empty {proto:?} server", p.id);
                assert_eq!(s.host, s.host.to_ascii_lowercase(), "{}: host not lower-case", p.id);
                // A known port with the wrong mode, or an unknown port, would be a
                // plaintext-only or broken entry.
                if IMPLICIT_TLS_PORTS.contains(&s.port) {
                    assert!(s.tls, "{}: {proto:?} port {} must be TLS", p.id, s.port);
                } else if STARTTLS_PORTS.contains(&s.port) {
                    assert!(!s.tls, "{}: {proto:?} port {} must be STARTTLS", p.id, s.port);
                } else {
                    panic!("{}: {proto:?} port {} is not a standard TLS/STARTTLS port", p.id, s.port);
                }
                let expected: &[u16] = match proto {
                    Proto::Pop3 => &[995, 110],
                    Proto::Imap => &[993, 143],
                    Proto::Smtp => &[465, 587],
                };
                assert!(expected.contains(&s.port), "{}: {proto:?} on port {}", p.id, s.port);
                // Recommended settings must pass our own validation.
                let settings = ServerSettings {
                    proto,
                    host: &s.host,
                    port: s.port,
                    tls: s.tls,
                    oauth2: !p.accepts_password(),
                    has_password: p.accepts_password(),
                    username: "someone@example.com",
                    password: None,
                };
                let errors: Vec<_> =
                    validate(&settings).into_iter().filter(|f| f.severity == Severity::Error).collect();
                assert!(errors.is_empty(), "{}: {proto:?} preset fails validation: {errors:?}", p.id);
            }
            for (proto, _) in servers(p) {
                for &(port, tls) in also_accepted(p.id, proto) {
                    assert_eq!(tls, IMPLICIT_TLS_PORTS.contains(&port), "{}: alternative {port}", p.id);
                }
            }
        }
        assert_eq!(all.last().map(|p| p.id), Some("generic"));
    }

    #[test]
    fn generic_has_no_servers() {
        let g = by_id("generic").expect("generic preset");
        assert!(g.pop3.is_none() && g.imap.is_none() && g.smtp.is_none());
        assert!(g.domains.is_empty());
        assert_eq!(g.smtp_provider, crate::plan::Provider::Generic);
    }

    #[test]
    fn every_domain_finds_its_preset() {
        for p in catalogue() {
            for d in &p.domains {
                assert_eq!(by_domain(d).map(|f| f.id), Some(p.id), "{d}");
                assert_eq!(by_domain(&d.to_ascii_uppercase()).map(|f| f.id), Some(p.id), "{d} upper-case");
            }
        }
    }

    #[test]
    fn domain_lookup_is_exact() {
        assert_eq!(by_domain("GMail.com").map(|p| p.id), Some("gmail"));
        assert_eq!(by_domain("gmail.com.").map(|p| p.id), Some("gmail"));
        assert_eq!(by_domain("mail.gmail.com"), None);
        assert_eq!(by_domain("gmail.co"), None);
        assert_eq!(by_domain("user@gmail.com"), None);
        assert_eq!(by_domain(""), None);
        assert_eq!(by_domain("example.com"), None);
    }

    #[test]
    fn required_providers_are_present() {
        for (id, domain) in [
            ("gmail", Some("googlemail.com")),
            ("microsoft365", None),
            ("outlook", Some("hotmail.de")),
            ("yahoo", Some("yahoo.com")),
            ("aol", Some("aol.com")),
            ("icloud", Some("mac.com")),
            ("gmx", Some("gmx.ch")),
            ("webde", Some("web.de")),
            ("t-online", Some("t-online.de")),
            ("ionos", None),
            ("strato", None),
            ("mailbox-org", Some("mailbox.org")),
            ("posteo", Some("posteo.de")),
            ("fastmail", Some("fastmail.com")),
            ("zoho", Some("zoho.com")),
            ("generic", None),
        ] {
            assert!(by_id(id).is_some(), "missing preset {id}");
            if let Some(d) = domain {
                assert_eq!(by_domain(d).map(|f| f.id), Some(id));
            }
        }
        assert_eq!(by_id("nope"), None);
        for d in ["outlook.com", "hotmail.com", "live.com", "msn.com", "outlook.de"] {
            assert_eq!(by_domain(d).map(|p| p.id), Some("outlook"), "{d}");
        }
        for d in ["gmx.de", "gmx.net", "gmx.at", "gmx.com"] {
            assert_eq!(by_domain(d).map(|p| p.id), Some("gmx"), "{d}");
        }
        for d in ["icloud.com", "me.com"] {
            assert_eq!(by_domain(d).map(|p| p.id), Some("icloud"), "{d}");
        }
    }

    fn server(host: &str, port: u16, tls: bool) -> Option<ServerPreset> {
        Some(ServerPreset { host: host.into(), port, tls })
    }

    #[test]
    fn gmail_matches_the_spec_table_with_errata() {
        let g = by_domain("gmail.com").expect("gmail");
        assert_eq!(g.pop3, server("pop.gmail.com", 995, true));
        // Errata: "impa.gmail.com" in the German table is a typo.
        assert_eq!(g.imap, server("imap.gmail.com", 993, true));
        // TLS unchecked = STARTTLS.
        assert_eq!(g.smtp, server("smtp.gmail.com", 587, false));
        assert_eq!(g.auth.first(), Some(&AuthSupport::AppPasswordRequired));
        assert!(g.auth.contains(&AuthSupport::OAuth2 { provider: "google" }));
        assert!(!g.auth.contains(&AuthSupport::Basic), "Google refuses normal passwords");
        assert_eq!(g.username, UsernameForm::FullAddress);
        assert_eq!(g.smtp_provider, crate::plan::Provider::Gmail);
        assert!(g.source.contains("errata") && g.source.contains("imap.gmail.com"));
        assert!(g.notes.iter().any(|n| n.en.contains("2-Step Verification")));
        assert_eq!(also_accepted("gmail", Proto::Smtp), &[(465, true)]);
    }

    #[test]
    fn microsoft_matches_the_spec_table_with_errata() {
        let m = by_id("microsoft365").expect("microsoft365");
        assert_eq!(m.pop3, server("outlook.office365.com", 995, true));
        assert_eq!(m.imap, server("outlook.office365.com", 993, true));
        // Errata: the spec says "TLS enabled", but 587 speaks STARTTLS.
        assert_eq!(m.smtp, server("smtp.office365.com", 587, false));
        assert_eq!(m.auth, vec![AuthSupport::OAuth2 { provider: "microsoft" }]);
        assert!(m.domains.is_empty());
        assert_eq!(m.smtp_provider, crate::plan::Provider::Microsoft);
        assert!(m.source.contains("errata") && m.source.contains("STARTTLS"));
    }

    #[test]
    fn server_preset_maps_to_security() {
        use crate::config::Security;
        let g = by_id("gmail").expect("gmail");
        let imap = g.imap.expect("imap").to_server();
        assert_eq!((imap.host.as_str(), imap.port, imap.security), ("imap.gmail.com", 993, Security::ImplicitTls));
        let smtp = g.smtp.expect("smtp").to_server();
        assert_eq!(smtp.security, Security::Starttls);
    }

    #[test]
    fn host_lookup_finds_presets() {
        assert_eq!(by_host("IMAP.gmail.com.", Proto::Imap).map(|p| p.id), Some("gmail"));
        assert_eq!(by_host("imap.gmail.com", Proto::Pop3), None);
        assert_eq!(by_any_host("imap.gmail.com").map(|(p, proto)| (p.id, proto)), Some(("gmail", Proto::Imap)));
        assert_eq!(by_host("smtp-mail.outlook.com", Proto::Smtp).map(|p| p.id), Some("outlook"));
        assert_eq!(by_any_host("mail.example.com"), None);
    }
}
