//! Well-known provider replies (Gmail, Microsoft 365, common relay and TLS refusals) turned
//! into a cause and an action for the admin, in English and German.
//!
//! Recognition uses the reply code, the RFC 3463 enhanced code and a few words of the text;
//! the providers' wording changes over time, so the words are short and matched ignoring case.

use crate::error::Error;
use crate::plan::Text;

use super::reply::enhanced_status;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub cause: Text,
    pub action: Text,
}

/// The replies this module knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// Gmail 534 5.7.9: the account has 2-Step Verification; only an app password works.
    GmailAppPasswordRequired,
    /// 5.7.9 elsewhere (RFC 4954: mechanism too weak).
    MechanismTooWeak,
    /// Gmail 535 5.7.8 "Username and Password not accepted".
    GmailBadCredentials,
    /// Microsoft 535 5.7.3 "Authentication unsuccessful".
    MicrosoftAuthUnsuccessful,
    /// Microsoft 535 5.7.139: SMTP AUTH switched off for the tenant or mailbox.
    SmtpAuthDisabled,
    /// Microsoft 535 5.7.139 "... locked by your organization's security defaults policy".
    SecurityDefaults,
    /// Microsoft 550 5.7.30, or 5.7.139 "basic authentication is disabled".
    BasicAuthRetired,
    /// Microsoft 550 5.7.60 / 554 5.2.252 SendAsDenied.
    SendAsDenied,
    /// Microsoft 530 5.7.57 "Client not authenticated to send mail".
    NotAuthenticated,
    /// 530 5.7.0 "Must issue a STARTTLS command first".
    StarttlsRequired,
    /// 5.7.1 relaying denied.
    RelayDenied,
    /// Any other 535 (RFC 4954: credentials invalid).
    BadCredentials,
}

impl Known {
    /// Explanations that assume a password sign-in; wrong advice for OAuth2 credentials.
    pub(crate) fn is_about_password(self) -> bool {
        matches!(
            self,
            Known::GmailAppPasswordRequired
                | Known::MechanismTooWeak
                | Known::GmailBadCredentials
                | Known::MicrosoftAuthUnsuccessful
                | Known::SecurityDefaults
                | Known::BasicAuthRetired
                | Known::BadCredentials
        )
    }

    pub(crate) fn explanation(self) -> Explanation {
        let (cause_en, cause_de, action_en, action_de) = match self {
            Known::GmailAppPasswordRequired => (
                "Google requires an app password for this account: the normal Google password is not accepted for SMTP.",
                "Google verlangt für dieses Konto ein App-Passwort: Das normale Google-Passwort wird für SMTP nicht akzeptiert.",
                "Turn on 2-Step Verification for the Google account, create an app password (Google Account > Security > App passwords) and enter it here as the password; or switch this account to OAuth2.",
                "Aktivieren Sie die Bestätigung in zwei Schritten für das Google-Konto, erstellen Sie ein App-Passwort (Google-Konto > Sicherheit > App-Passwörter) und tragen Sie es hier als Kennwort ein; oder stellen Sie dieses Konto auf OAuth2 um.",
            ),
            Known::MechanismTooWeak => (
                "The server does not allow this sign-in method for the account (authentication mechanism too weak).",
                "Der Server erlaubt diese Anmeldemethode für das Konto nicht (Authentifizierungsverfahren zu schwach).",
                "Use an app password if the provider offers one, or switch this account to OAuth2.",
                "Verwenden Sie ein App-Passwort, falls der Anbieter eines anbietet, oder stellen Sie dieses Konto auf OAuth2 um.",
            ),
            Known::GmailBadCredentials => (
                "Gmail did not accept the user name and password.",
                "Gmail hat Benutzername und Kennwort nicht akzeptiert.",
                "Check the user name (the full Gmail address) and the password. Gmail accepts only an app password here (it needs 2-Step Verification), not the normal Google password; or use OAuth2.",
                "Prüfen Sie den Benutzernamen (die vollständige Gmail-Adresse) und das Kennwort. Gmail akzeptiert hier nur ein App-Passwort (dafür ist die Bestätigung in zwei Schritten nötig), nicht das normale Google-Passwort; oder verwenden Sie OAuth2.",
            ),
            Known::MicrosoftAuthUnsuccessful => (
                "Microsoft 365 refused the sign-in: the password is wrong, or password sign-in over SMTP (SMTP AUTH) is blocked for this mailbox.",
                "Microsoft 365 hat die Anmeldung abgelehnt: Das Kennwort ist falsch, oder die Anmeldung mit Kennwort über SMTP (SMTP AUTH) ist für dieses Postfach gesperrt.",
                "Check the user name (the full address) and the password, and that Authenticated SMTP is on for the mailbox (Microsoft 365 admin center > Users > Active users > the mailbox > Mail > Manage email apps); better, switch this account to OAuth2.",
                "Prüfen Sie Benutzernamen (die vollständige Adresse) und Kennwort und ob „Authentifiziertes SMTP“ für das Postfach aktiviert ist (Microsoft 365 Admin Center > Benutzer > Aktive Benutzer > Postfach > E-Mail > E-Mail-Apps verwalten); besser stellen Sie dieses Konto auf OAuth2 um.",
            ),
            Known::SmtpAuthDisabled => (
                "SMTP AUTH is disabled for this Microsoft 365 tenant or mailbox, so the server refuses every SMTP sign-in.",
                "SMTP AUTH ist für diesen Microsoft-365-Mandanten oder dieses Postfach deaktiviert; der Server lehnt deshalb jede SMTP-Anmeldung ab.",
                "Enable it for the mailbox in Exchange Online PowerShell: Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false, or in the Microsoft 365 admin center (Users > Active users > the mailbox > Mail > Manage email apps > Authenticated SMTP).",
                "Aktivieren Sie es für das Postfach in Exchange Online PowerShell: Set-CASMailbox -Identity <Postfach> -SmtpClientAuthenticationDisabled $false, oder im Microsoft 365 Admin Center (Benutzer > Aktive Benutzer > Postfach > E-Mail > E-Mail-Apps verwalten > Authentifiziertes SMTP).",
            ),
            Known::SecurityDefaults => (
                "The security defaults of the Microsoft 365 tenant block password sign-in over SMTP for this user.",
                "Die Sicherheitsstandards des Microsoft-365-Mandanten sperren für diesen Benutzer die Anmeldung mit Kennwort über SMTP.",
                "Switch this account to OAuth2; or have the tenant administrator turn off security defaults (Microsoft Entra admin center) and allow SMTP AUTH through Conditional Access instead.",
                "Stellen Sie dieses Konto auf OAuth2 um; oder lassen Sie den Administrator des Mandanten die Sicherheitsstandards (Microsoft Entra Admin Center) deaktivieren und SMTP AUTH stattdessen über bedingten Zugriff erlauben.",
            ),
            Known::BasicAuthRetired => (
                "Microsoft has retired Basic authentication (user name and password) for SMTP submission in this tenant.",
                "Microsoft hat die Standardauthentifizierung (Benutzername und Kennwort) für den SMTP-Versand in diesem Mandanten abgeschaltet.",
                "Switch this account to OAuth2 (modern authentication); a password, even an app password, no longer works here.",
                "Stellen Sie dieses Konto auf OAuth2 (moderne Authentifizierung) um; ein Kennwort, auch ein App-Kennwort, funktioniert hier nicht mehr.",
            ),
            Known::SendAsDenied => (
                "The server does not let the SMTP account send with this From address: the account has no Send As or Send on Behalf permission for that mailbox.",
                "Der Server erlaubt dem SMTP-Konto nicht, mit dieser Absenderadresse zu senden: Das Konto hat für dieses Postfach weder die Berechtigung „Senden als“ noch „Senden im Auftrag von“.",
                "Grant the SMTP account Send As or Send on Behalf on the From address's mailbox (Exchange admin center: Recipients > Mailboxes > that mailbox > Delegation) and set the same permission in the queue's sender settings; or let the From be the SMTP account itself.",
                "Erteilen Sie dem SMTP-Konto „Senden als“ oder „Senden im Auftrag von“ für das Postfach der Absenderadresse (Exchange Admin Center: Empfänger > Postfächer > dieses Postfach > Delegierung) und stellen Sie dieselbe Berechtigung in den Absendereinstellungen der Queue ein; oder verwenden Sie das SMTP-Konto selbst als Absender.",
            ),
            Known::NotAuthenticated => (
                "The server requires a successful sign-in before sending and does not consider this session signed in.",
                "Der Server verlangt vor dem Versand eine erfolgreiche Anmeldung und betrachtet diese Sitzung nicht als angemeldet.",
                "Check that SMTP AUTH (Authenticated SMTP) is enabled for the account and that the user name is the mailbox's own address.",
                "Prüfen Sie, ob SMTP AUTH („Authentifiziertes SMTP“) für das Konto aktiviert ist und ob der Benutzername die eigene Adresse des Postfachs ist.",
            ),
            Known::StarttlsRequired => (
                "The server accepts commands only over an encrypted connection, and this connection is not encrypted.",
                "Der Server nimmt Befehle nur über eine verschlüsselte Verbindung an, und diese Verbindung ist nicht verschlüsselt.",
                "Set the security of this SMTP server to STARTTLS (usually port 587) or TLS (port 465).",
                "Stellen Sie die Sicherheit dieses SMTP-Servers auf STARTTLS (meist Port 587) oder TLS (Port 465).",
            ),
            Known::RelayDenied => (
                "The server refused to pass the message on to a recipient outside its own domains (relaying denied): it does not treat this session as allowed to send there.",
                "Der Server hat es abgelehnt, die Nachricht an einen Empfänger außerhalb seiner eigenen Domains weiterzuleiten (Relaying verweigert): Er betrachtet diese Sitzung nicht als berechtigt, dorthin zu senden.",
                "Check that the host is the provider's submission server (usually port 587 or 465), not a server that only receives mail for its own domains, and that this account may send to external recipients.",
                "Prüfen Sie, ob der Host der Versandserver des Anbieters ist (meist Port 587 oder 465) und nicht ein Server, der nur E-Mails für seine eigenen Domains empfängt, und ob dieses Konto an externe Empfänger senden darf.",
            ),
            Known::BadCredentials => (
                "The server did not accept the user name and password.",
                "Der Server hat Benutzername und Kennwort nicht akzeptiert.",
                "Check the user name and password; use an app password if the provider requires one, and check that SMTP AUTH is enabled for the account.",
                "Prüfen Sie Benutzername und Kennwort; verwenden Sie ein App-Passwort, falls der Anbieter es verlangt, und prüfen Sie, ob SMTP AUTH für das Konto aktiviert ist.",
            ),
        };
        Explanation { cause: Text::new(cause_en, cause_de), action: Text::new(action_en, action_de) }
    }
}

/// Recognises well-known provider replies by code, enhanced code and text. `text` is the
/// reply text without the code; lines of a multi-line reply joined by "\n", as in
/// `ServerReply::text`.
pub fn explain(code: u16, text: &str) -> Option<Explanation> {
    lookup(code, text).map(Known::explanation)
}

/// The explanation of the server reply an error carries, if it is a known one.
pub fn explain_error(e: &Error) -> Option<Explanation> {
    let reply = e.reply.as_ref()?;
    let code = reply.code.trim().parse::<u16>().ok()?;
    explain(code, &reply.text)
}

pub(crate) fn lookup(code: u16, text: &str) -> Option<Known> {
    let lower = text.to_lowercase();
    let has = |words: &str| lower.contains(words);
    let enhanced = enhanced_code(text);
    let is = |e: &str| enhanced == Some(e);
    let known = if has("sendasdenied") || is("5.7.60") || is("5.2.252") {
        Known::SendAsDenied
    } else if is("5.7.9") {
        if has("application-specific password") || has("invalidsecondfactor") {
            Known::GmailAppPasswordRequired
        } else {
            Known::MechanismTooWeak
        }
    } else if is("5.7.139") {
        if has("security defaults") {
            Known::SecurityDefaults
        } else if has("basic authentication") {
            Known::BasicAuthRetired
        } else {
            Known::SmtpAuthDisabled
        }
    } else if is("5.7.30") || (has("basic authentication") && has("not supported")) {
        Known::BasicAuthRetired
    } else if is("5.7.57") {
        Known::NotAuthenticated
    } else if has("starttls") && (code == 530 || is("5.7.0")) {
        Known::StarttlsRequired
    } else if has("relay") && (is("5.7.1") || matches!(code, 550 | 551 | 553 | 554)) {
        Known::RelayDenied
    } else if code == 535 && (has("username and password not accepted") || has("badcredentials")) {
        Known::GmailBadCredentials
    } else if code == 535 && is("5.7.3") {
        Known::MicrosoftAuthUnsuccessful
    } else if code == 535 {
        Known::BadCredentials
    } else {
        return None;
    };
    Some(known)
}

/// The first RFC 3463 status code ("5.7.139") that starts a line of the text.
fn enhanced_code(text: &str) -> Option<&str> {
    text.lines().find_map(enhanced_status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ServerReply, Stage};

    #[track_caller]
    fn check(code: u16, text: &str, expected: Known, en: &[&str], de: &[&str]) {
        assert_eq!(lookup(code, text), Some(expected), "{code} {text}");
        let x = explain(code, text).unwrap();
        let en_all = format!("{} {}", x.cause.en, x.action.en);
        let de_all = format!("{} {}", x.cause.de, x.action.de);
        for phrase in en {
            assert!(en_all.contains(phrase), "{phrase:?} missing in: {en_all}");
        }
        for phrase in de {
            assert!(de_all.contains(phrase), "{phrase:?} missing in: {de_all}");
        }
    }

    #[test]
    fn gmail_app_password_required() {
        check(
            534,
            "5.7.9 Application-specific password required. Learn more at\n5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor a1-20020a05 - gsmtp",
            Known::GmailAppPasswordRequired,
            &["app password", "2-Step Verification", "OAuth2"],
            &["App-Passwort", "Bestätigung in zwei Schritten", "OAuth2"],
        );
        // The same enhanced code without Google's wording: advice without Google's menus.
        check(534, "5.7.9 Authentication mechanism is too weak", Known::MechanismTooWeak, &["app password", "OAuth2"], &["OAuth2"]);
    }

    #[test]
    fn gmail_username_and_password_not_accepted() {
        check(
            535,
            "5.7.8 Username and Password not accepted. For more information, go to\n5.7.8  https://support.google.com/mail/?p=BadCredentials x12sm - gsmtp",
            Known::GmailBadCredentials,
            &["user name", "password", "app password"],
            &["Benutzernamen", "Kennwort", "App-Passwort"],
        );
        check(535, "5.7.8 Error: authentication failed: authentication failure", Known::BadCredentials, &["password"], &["Kennwort"]);
        check(535, "Authentication failed", Known::BadCredentials, &["user name and password"], &["Benutzername und Kennwort"]);
    }

    #[test]
    fn microsoft_smtp_auth_disabled() {
        for text in [
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR02CA0001.eurprd02.prod.outlook.com]",
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
            "5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully.",
        ] {
            check(
                535,
                text,
                Known::SmtpAuthDisabled,
                &["SMTP AUTH is disabled", "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false", "Microsoft 365 admin center"],
                &["deaktiviert", "Set-CASMailbox -Identity <Postfach> -SmtpClientAuthenticationDisabled $false", "Microsoft 365 Admin Center"],
            );
        }
        check(
            535,
            "5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.",
            Known::SecurityDefaults,
            &["security defaults", "OAuth2"],
            &["Sicherheitsstandards", "OAuth2"],
        );
        check(535, "5.7.139 Authentication unsuccessful, basic authentication is disabled.", Known::BasicAuthRetired, &["OAuth2"], &["OAuth2"]);
        check(535, "5.7.3 Authentication unsuccessful [BN0PR04CA0001.namprd04.prod.outlook.com]", Known::MicrosoftAuthUnsuccessful, &["Authenticated SMTP", "OAuth2"], &["Authentifiziertes SMTP"]);
    }

    #[test]
    fn microsoft_send_as_denied() {
        let en = ["Send As", "Send on Behalf", "Delegation", "From be the SMTP account"];
        let de = ["„Senden als“", "„Senden im Auftrag von“", "Delegierung", "SMTP-Konto selbst als Absender"];
        check(550, "5.7.60 SMTP; Client does not have permissions to send as this sender", Known::SendAsDenied, &en, &de);
        check(
            554,
            "5.2.252 SendAsDenied; queue@acme.example not allowed to send as support@acme.example; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception",
            Known::SendAsDenied,
            &en,
            &de,
        );
        // Older Exchange wording carries a generic enhanced code.
        check(554, "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", Known::SendAsDenied, &en, &de);
    }

    #[test]
    fn microsoft_basic_auth_retired() {
        check(
            550,
            "5.7.30 Basic authentication is not supported for Client Submission.",
            Known::BasicAuthRetired,
            &["Basic authentication", "retired", "OAuth2"],
            &["Standardauthentifizierung", "OAuth2"],
        );
    }

    #[test]
    fn starttls_required() {
        check(
            530,
            "5.7.0 Must issue a STARTTLS command first. a1sm2 - gsmtp",
            Known::StarttlsRequired,
            &["encrypted", "STARTTLS", "587", "465"],
            &["verschlüsselte", "STARTTLS", "587", "465"],
        );
    }

    #[test]
    fn relay_denied() {
        for (code, text) in [
            (554, "5.7.1 <ann@example.com>: Relay access denied"),
            (550, "5.7.1 Unable to relay"),
            (550, "5.7.1 Relaying denied"),
            (553, "5.7.1 Relay access denied"),
        ] {
            check(code, text, Known::RelayDenied, &["relaying denied", "submission server"], &["Relaying verweigert", "Versandserver"]);
        }
    }

    #[test]
    fn microsoft_client_not_authenticated() {
        check(530, "5.7.57 Client not authenticated to send mail. Error: 535 5.7.139", Known::NotAuthenticated, &["sign-in"], &["Anmeldung"]);
    }

    #[test]
    fn unknown_replies_are_not_explained() {
        for (code, text) in [
            (550, "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"),
            (554, "5.7.1 Message rejected as spam"),
            (451, "4.3.0 Temporary lookup failure"),
            (250, "2.0.0 Ok: queued"),
            (550, ""),
        ] {
            assert_eq!(lookup(code, text), None, "{code} {text}");
        }
    }

    #[test]
    fn explain_error_reads_the_reply() {
        let e = Error::auth(Stage::Authenticate, "rejected").with_reply(ServerReply::new("534", "5.7.9 Application-specific password required."));
        assert_eq!(explain_error(&e), Some(Known::GmailAppPasswordRequired.explanation()));
        assert_eq!(explain_error(&Error::network(Stage::Data, "closed")), None);
        let odd = Error::auth(Stage::Authenticate, "x").with_reply(ServerReply::new("5x5", "5.7.8 nope"));
        assert_eq!(explain_error(&odd), None);
    }

    #[test]
    fn password_advice_is_marked() {
        assert!(Known::GmailBadCredentials.is_about_password());
        assert!(!Known::SmtpAuthDisabled.is_about_password());
        assert!(!Known::SendAsDenied.is_about_password());
    }

    #[test]
    fn enhanced_code_is_found_on_any_line_start() {
        assert_eq!(enhanced_code("smtp.example\n5.7.1 no"), Some("5.7.1"));
        assert_eq!(enhanced_code("5.7.139 x"), Some("5.7.139"));
        assert_eq!(enhanced_code("see 5.7.1"), None);
        assert_eq!(enhanced_code("5.7 short\n6.1.1 bad class"), None);
    }
}
