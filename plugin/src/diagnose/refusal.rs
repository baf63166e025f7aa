//! Ordinary refusals (`ErrorKind::Refused`) for the admin: which recipients the server refused
//! and what each answer means (4xx: try later, 5xx: fix the address first), or a message over
//! the provider's size limit. Server text is shown only through `error::quote`.

use crate::error::{quote, Error, Refusal, RefusalCause, Retry};
use crate::session::RecipientResult;

use super::Diagnosis;

/// Recipients named one by one; the rest are counted.
const SHOWN: usize = 5;
/// Most characters of one reply quoted.
const QUOTED_REPLY_CHARS: usize = 120;

/// The diagnosis of a refusal; `error` carries the stage and message, `refusal` the details.
pub(super) fn explain(error: &Error, refusal: &Refusal) -> Diagnosis {
    match refusal.cause {
        RefusalCause::Recipients => recipients(error, &refusal.recipients),
        RefusalCause::MessageTooBig { size, server_limit } => too_big(size, server_limit),
    }
}

/// "<a@b> "451 4.2.1 Mailbox busy" (temporary)", at most `SHOWN`, then "and N more".
fn listed(refused: &[&RecipientResult], temporary: &str, permanent: &str, more: &str) -> String {
    let mut items: Vec<String> = refused
        .iter()
        .take(SHOWN)
        .map(|r| {
            let reply = quote(format!("{} {}", r.reply.code, r.reply.text.replace('\n', " ")).as_bytes(), QUOTED_REPLY_CHARS);
            let class = if r.retry == Some(Retry::Later) { temporary } else { permanent };
            format!("<{}> {reply} ({class})", r.address)
        })
        .collect();
    if refused.len() > SHOWN {
        items.push(more.replace("{n}", &(refused.len() - SHOWN).to_string()));
    }
    items.join("; ")
}

/// Only the addresses: "<a@b>, <c@d>", at most `SHOWN`, then "and N more".
fn addresses(refused: &[&RecipientResult], more: &str) -> String {
    let mut items: Vec<String> = refused.iter().take(SHOWN).map(|r| format!("<{}>", r.address)).collect();
    if refused.len() > SHOWN {
        items.push(more.replace("{n}", &(refused.len() - SHOWN).to_string()));
    }
    items.join(", ")
}

fn recipients(error: &Error, all: &[RecipientResult]) -> Diagnosis {
    let refused: Vec<&RecipientResult> = all.iter().filter(|r| !r.accepted).collect();
    if refused.is_empty() {
        // Not built by the guest this way; say what the error says.
        return Diagnosis {
            cause_en: format!("The server refused recipients: {}", error.message),
            cause_de: "Der Server hat Empfänger abgelehnt (Einzelheiten in der englischen Meldung).".into(),
            action_en: "Check the addresses and send again.".into(),
            action_de: "Prüfen Sie die Adressen und senden Sie erneut.".into(),
        };
    }
    let (n, total) = (refused.len(), all.len());
    let temporary: Vec<&RecipientResult> = refused.iter().copied().filter(|r| r.retry == Some(Retry::Later)).collect();
    let permanent: Vec<&RecipientResult> = refused.iter().copied().filter(|r| r.retry != Some(Retry::Later)).collect();
    let cause_en = format!(
        "The server refused {n} of {total} recipients: {}. This is the server's ordinary answer about these addresses, not a problem with the connection or the settings; nothing was sent.",
        listed(&refused, "temporary", "permanent", "and {n} more")
    );
    let cause_de = format!(
        "Der Server hat {n} von {total} Empfängern abgelehnt: {}. Das ist die gewöhnliche Antwort des Servers zu diesen Adressen, kein Problem der Verbindung oder der Einstellungen; es wurde nichts gesendet.",
        listed(&refused, "vorübergehend", "dauerhaft", "und {n} weitere")
    );
    let (action_en, action_de) = match (temporary.is_empty(), permanent.is_empty()) {
        (false, true) => (
            "Send the message again later: these refusals are temporary (4xx, e.g. the mailbox is busy or the server greylists), so a later attempt can succeed; if they persist for hours, ask the recipients' provider.".to_string(),
            "Senden Sie die Nachricht später erneut: Diese Ablehnungen sind vorübergehend (4xx, z. B. Postfach belegt oder Greylisting), ein späterer Versuch kann gelingen; hält das über Stunden an, fragen Sie beim Anbieter der Empfänger nach.".to_string(),
        ),
        (true, _) => (
            "Correct or remove the refused addresses before sending again: a permanent refusal (5xx, e.g. no such user) repeats on every attempt.".to_string(),
            "Korrigieren oder entfernen Sie die abgelehnten Adressen, bevor Sie erneut senden: Eine dauerhafte Ablehnung (5xx, z. B. unbekannter Benutzer) wiederholt sich bei jedem Versuch.".to_string(),
        ),
        (false, false) => (
            format!(
                "Correct or remove the permanently refused addresses (5xx) first: {}; the temporarily refused ones (4xx) can be tried again later: {}.",
                addresses(&permanent, "and {n} more"),
                addresses(&temporary, "and {n} more")
            ),
            format!(
                "Korrigieren oder entfernen Sie zuerst die dauerhaft abgelehnten Adressen (5xx): {}; die vorübergehend abgelehnten (4xx) können Sie später erneut versuchen: {}.",
                addresses(&permanent, "und {n} weitere"),
                addresses(&temporary, "und {n} weitere")
            ),
        ),
    };
    Diagnosis { cause_en, cause_de, action_en, action_de }
}

fn too_big(size: u64, server_limit: Option<u64>) -> Diagnosis {
    let (limit_en, limit_de) = match server_limit {
        Some(l) => (format!(" (at most {l} bytes)"), format!(" (höchstens {l} Bytes)")),
        None => (String::new(), String::new()),
    };
    Diagnosis {
        cause_en: format!(
            "The message ({size} bytes) is larger than the submission server accepts{limit_en}. This limit is the provider's, not a setting of mailplug; the message was not sent."
        ),
        cause_de: format!(
            "Die Nachricht ({size} Bytes) ist größer, als der Versandserver annimmt{limit_de}. Diese Grenze legt der Anbieter fest, sie ist keine Einstellung von mailplug; die Nachricht wurde nicht gesendet."
        ),
        action_en: "Send a smaller message: fewer or smaller attachments (for a large file, send a link instead); or ask the provider whether this account may send larger messages.".into(),
        action_de: "Senden Sie eine kleinere Nachricht: weniger oder kleinere Anhänge (für eine große Datei besser einen Link); oder fragen Sie den Anbieter, ob dieses Konto größere Nachrichten senden darf.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::explain as explain_error;
    use crate::error::{Error, Refusal, RefusalCause, ServerReply, Stage};
    use crate::session::RecipientResult;

    fn rcpt(address: &str, code: u16, text: &str) -> RecipientResult {
        RecipientResult::from_reply(address.into(), code, ServerReply::new(code.to_string(), text))
    }

    fn refused(recipients: Vec<RecipientResult>) -> Error {
        let first = recipients.iter().find(|r| !r.accepted).map(|r| r.reply.clone());
        let mut e = Error::refused(Stage::Envelope, "the server refused all recipients", Refusal { cause: RefusalCause::Recipients, recipients });
        e.reply = first;
        e
    }

    #[test]
    fn busy_and_unknown_recipients_are_named_with_their_replies_and_classified() {
        let busy = refused(vec![rcpt("busy@smtp2.test", 451, "4.2.1 Mailbox busy")]);
        let d = explain_error(&busy);
        assert!(d.cause_en.contains("<busy@smtp2.test> \"451 4.2.1 Mailbox busy\" (temporary)"), "{}", d.cause_en);
        assert!(d.cause_de.contains("<busy@smtp2.test> \"451 4.2.1 Mailbox busy\" (vorübergehend)"), "{}", d.cause_de);
        assert!(d.action_en.starts_with("Send the message again later"), "{}", d.action_en);
        assert!(d.action_de.starts_with("Senden Sie die Nachricht später erneut"), "{}", d.action_de);

        let nouser = refused(vec![rcpt("nouser@smtp2.test", 550, "5.1.1 No such user")]);
        let d = explain_error(&nouser);
        assert!(d.cause_en.contains("<nouser@smtp2.test> \"550 5.1.1 No such user\" (permanent)"), "{}", d.cause_en);
        assert!(d.action_en.starts_with("Correct or remove the refused addresses"), "{}", d.action_en);
        assert!(d.action_de.starts_with("Korrigieren oder entfernen Sie die abgelehnten Adressen"), "{}", d.action_de);

        let both = refused(vec![rcpt("busy@smtp2.test", 451, "4.2.1 Mailbox busy"), rcpt("nouser@smtp2.test", 550, "5.1.1 No such user")]);
        let d = explain_error(&both);
        assert!(d.cause_en.contains("refused 2 of 2 recipients"), "{}", d.cause_en);
        assert!(d.action_en.contains("(5xx) first: <nouser@smtp2.test>") && d.action_en.contains("later: <busy@smtp2.test>"), "{}", d.action_en);
        assert!(d.action_de.contains("(5xx): <nouser@smtp2.test>") && d.action_de.contains("erneut versuchen: <busy@smtp2.test>"), "{}", d.action_de);
        for d in [explain_error(&busy), explain_error(&nouser), d] {
            let all = format!("{} {} {} {}", d.cause_en, d.action_en, d.cause_de, d.action_de);
            for wrong in ["protocol", "port", "provider weiter", "unerwartet", "give this message"] {
                assert!(!all.contains(wrong), "{wrong:?} in {all}");
            }
        }
    }

    #[test]
    fn a_known_provider_refusal_keeps_its_own_explanation() {
        let relay = refused(vec![rcpt("x@elsewhere.example", 554, "5.7.1 <x@elsewhere.example>: Relay access denied")]);
        let d = explain_error(&relay);
        assert!(d.cause_en.to_lowercase().contains("relay"), "{}", d.cause_en);
    }

    #[test]
    fn many_refused_recipients_are_counted_and_reply_text_is_quoted() {
        let many: Vec<RecipientResult> = (0..8).map(|i| rcpt(&format!("u{i}@x.example"), 550, "5.1.1 unknown\u{1b}[31m")).collect();
        let d = explain_error(&refused(many));
        assert!(d.cause_en.contains("and 3 more") && d.cause_de.contains("und 3 weitere"), "{}", d.cause_en);
        assert!(!d.cause_en.contains('\u{1b}'), "control characters are quoted away: {}", d.cause_en);
    }

    #[test]
    fn a_message_over_the_size_limit_is_the_providers_limit() {
        let e = Error::refused(
            Stage::Envelope,
            "too big",
            Refusal { cause: RefusalCause::MessageTooBig { size: 2_000_000, server_limit: Some(1_048_576) }, recipients: vec![] },
        )
        .with_reply(ServerReply::new("552", "5.3.4 Message size exceeds fixed maximum message size"));
        let d = explain_error(&e);
        assert!(d.cause_en.contains("2000000 bytes") && d.cause_en.contains("at most 1048576 bytes") && d.cause_en.contains("provider's"), "{}", d.cause_en);
        assert!(d.cause_de.contains("höchstens 1048576 Bytes") && d.cause_de.contains("Anbieter"), "{}", d.cause_de);
        assert!(d.action_en.contains("smaller message") && d.action_en.contains("ask the provider"), "{}", d.action_en);
        assert!(d.action_de.contains("kleinere Nachricht") && d.action_de.contains("fragen Sie den Anbieter"), "{}", d.action_de);
        assert!(!d.action_en.contains("Raise") && !d.action_de.contains("Erhöhen"), "{}", d.action_en);
    }
}
