//! Who a reply is from: the From / Sender / Reply-To headers and the MAIL FROM address when a
//! queue answers mail that reached mailbox A through the queue's one SMTP account B.
//!
//! What the customer sees depends on the provider: Gmail replaces a From that is not the
//! account or one of its verified "Send mail as" aliases; Microsoft 365 refuses a From the
//! account has no Send As / Send on Behalf permission for (550 5.7.60, 554 5.2.252). Where
//! the reply cannot be From A, it is From B with Reply-To A, so the conversation stays on A.

use crate::error::{Error, Result, Stage};
use crate::headers::{check_header_value, parse_mailbox, Mailbox};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Gmail,
    Microsoft,
    Generic,
}

/// What the SMTP account may do for the inbound mailbox, as the tenant configured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    None,
    SendOnBehalf,
    SendAs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanInput {
    /// A: the inbound mailbox the customer wrote to.
    pub mailbox_address: String,
    /// A's display name, e.g. "ACME Support".
    pub mailbox_name: Option<String>,
    /// B: the queue's SMTP login (an address).
    pub smtp_account: String,
    pub provider: Provider,
    /// What the tenant says B may do for A.
    pub permission: Permission,
    /// Gmail: A is a verified "Send mail as" alias of B.
    pub gmail_alias_verified: bool,
}

/// A sentence for the admin, in English and German.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    pub en: String,
    pub de: String,
}

impl Text {
    pub fn new(en: impl Into<String>, de: impl Into<String>) -> Self {
        Text { en: en.into(), de: de.into() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub from: Mailbox,
    pub sender: Option<Mailbox>,
    pub reply_to: Option<Mailbox>,
    /// The SMTP MAIL FROM address.
    pub envelope_from: String,
    /// One plain sentence: what the customer sees as the sender.
    pub customer_sees: Text,
    /// Things the admin must know or fix.
    pub warnings: Vec<Text>,
}

/// Plans the sender headers and envelope of a reply. Refuses (`InvalidInput`) an address that
/// is not a bare `name@domain`, or a display name with a line break.
pub fn plan(input: &PlanInput) -> Result<Plan> {
    let a = bare_address("inbound mailbox", &input.mailbox_address)?;
    let b = bare_address("SMTP account", &input.smtp_account)?;
    let name = match &input.mailbox_name {
        Some(n) => {
            check_header_value("From display name", n)?;
            let n = n.trim();
            (!n.is_empty()).then(|| n.to_string())
        }
        None => None,
    };
    let mailbox_a = Mailbox { name: name.clone(), address: a.clone() };

    if a.to_lowercase() == b.to_lowercase() {
        return Ok(Plan {
            customer_sees: sees_sender(&shown(&mailbox_a)),
            from: mailbox_a,
            sender: None,
            reply_to: None,
            envelope_from: a,
            warnings: Vec::new(),
        });
    }

    let as_a = |sender: Option<Mailbox>, customer_sees: Text| Plan {
        from: mailbox_a.clone(),
        sender,
        reply_to: None,
        envelope_from: b.clone(),
        customer_sees,
        warnings: Vec::new(),
    };
    // From B under A's display name (the name the customer wrote to), answers going to A.
    let as_b = |warnings: Vec<Text>| {
        let from = Mailbox { name: name.clone(), address: b.clone() };
        Plan {
            customer_sees: sees_sender_replies_to(&shown(&from), &a),
            from,
            sender: None,
            reply_to: Some(mailbox_a.clone()),
            envelope_from: b.clone(),
            warnings,
        }
    };

    Ok(match (input.provider, input.permission) {
        (Provider::Gmail, permission) => {
            if input.gmail_alias_verified {
                as_a(None, sees_sender(&shown(&mailbox_a)))
            } else {
                let mut warnings = vec![gmail_shows_account(&a, &b)];
                if permission != Permission::None {
                    warnings.push(gmail_ignores_permission(&a));
                }
                as_b(warnings)
            }
        }
        (Provider::Microsoft | Provider::Generic, Permission::SendAs) => as_a(None, sees_sender(&shown(&mailbox_a))),
        (Provider::Microsoft | Provider::Generic, Permission::SendOnBehalf) => {
            let sender = Mailbox { name: None, address: b.clone() };
            let sees = sees_on_behalf(&b, &shown(&mailbox_a));
            as_a(Some(sender), sees)
        }
        (Provider::Microsoft, Permission::None) => as_b(vec![microsoft_needs_permission(&a, &b)]),
        (Provider::Generic, Permission::None) => as_b(vec![generic_no_permission(&a, &b)]),
    })
}

/// A bare `local@domain` (angle brackets allowed); a display name belongs in `mailbox_name`.
fn bare_address(field: &str, input: &str) -> Result<String> {
    let parsed = parse_mailbox(field, input)?;
    if parsed.name.is_some() {
        let shown: String = input.chars().take(120).collect();
        return Err(Error::invalid(
            Stage::Data,
            format!("the {field} address {shown:?} contains a display name; give the bare address (name@example.com) and put the name in the display name setting"),
        ));
    }
    Ok(parsed.address)
}

fn shown(m: &Mailbox) -> String {
    match &m.name {
        Some(name) => format!("{name} <{}>", m.address),
        None => m.address.clone(),
    }
}

fn sees_sender(who: &str) -> Text {
    Text::new(
        format!("The customer sees “{who}” as the sender."),
        format!("Der Kunde sieht als Absender „{who}“."),
    )
}

fn sees_sender_replies_to(who: &str, a: &str) -> Text {
    Text::new(
        format!("The customer sees “{who}” as the sender; their answers go to {a} (Reply-To)."),
        format!("Der Kunde sieht als Absender „{who}“; seine Antworten gehen an {a} (Reply-To)."),
    )
}

fn sees_on_behalf(b: &str, a: &str) -> Text {
    Text::new(
        format!("The customer sees “{b} on behalf of {a}” as the sender."),
        format!("Der Kunde sieht als Absender „{b} im Auftrag von {a}“."),
    )
}

fn gmail_shows_account(a: &str, b: &str) -> Text {
    Text::new(
        format!(
            "Gmail shows the SMTP account {b} as the sender, not {a}: it replaces any From address that is not a verified “Send mail as” address of the account, so the reply is sent From {b} with Reply-To {a}. \
To show {a}, add it in {b}'s Gmail settings under Accounts and Import > “Send mail as”, confirm it through the link in the verification mail, then mark the alias as verified here; or send through {a}'s own SMTP account."
        ),
        format!(
            "Gmail zeigt das SMTP-Konto {b} als Absender an, nicht {a}: Gmail ersetzt jede Absenderadresse, die keine bestätigte „E-Mail senden als“-Adresse des Kontos ist. Deshalb wird die Antwort mit Absender {b} und Reply-To {a} gesendet. \
Damit {a} angezeigt wird, fügen Sie die Adresse in den Gmail-Einstellungen von {b} unter „Konten und Import“ > „E-Mail senden als“ hinzu, bestätigen sie über den Link in der Bestätigungs-E-Mail und markieren den Alias dann hier als bestätigt; oder senden Sie über das eigene SMTP-Konto von {a}."
        ),
    )
}

fn gmail_ignores_permission(a: &str) -> Text {
    Text::new(
        format!(
            "The Send As / Send on Behalf permission set here is a Microsoft Exchange setting; Gmail ignores it. Only a verified “Send mail as” alias lets Gmail show {a}."
        ),
        format!(
            "Die hier eingestellte Berechtigung „Senden als“ / „Senden im Auftrag von“ ist eine Einstellung von Microsoft Exchange; Gmail beachtet sie nicht. Nur eine bestätigte „E-Mail senden als“-Adresse sorgt dafür, dass Gmail {a} anzeigt."
        ),
    )
}

fn microsoft_needs_permission(a: &str, b: &str) -> Text {
    Text::new(
        format!(
            "Microsoft 365 rejects a reply From {a} sent through {b} unless {b} has the Send As or Send on Behalf permission for {a} (550 5.7.60 / 554 5.2.252 SendAsDenied), so the reply is sent From {b} with Reply-To {a}. \
To reply as {a}, grant the permission in the Exchange admin center: Recipients > Mailboxes > {a} > Delegation > “Send as” or “Send on behalf”, add {b}, then set the same permission here."
        ),
        format!(
            "Microsoft 365 lehnt eine Antwort mit Absender {a} über das Konto {b} ab (550 5.7.60 / 554 5.2.252 SendAsDenied), solange {b} für {a} weder die Berechtigung „Senden als“ noch „Senden im Auftrag von“ hat. Deshalb wird die Antwort mit Absender {b} und Reply-To {a} gesendet. \
Um als {a} zu antworten, erteilen Sie die Berechtigung im Exchange Admin Center: Empfänger > Postfächer > {a} > Delegierung > „Senden als“ oder „Senden im Auftrag von“, fügen {b} hinzu und stellen hier dieselbe Berechtigung ein."
        ),
    )
}

fn generic_no_permission(a: &str, b: &str) -> Text {
    Text::new(
        format!(
            "No permission for {b} to send as {a} is set here, and many servers reject or rewrite a From address that is not the login's own, so the reply is sent From {b} with Reply-To {a}. \
If the server allows {b} to send as {a}, set the permission to Send As (or Send on Behalf)."
        ),
        format!(
            "Hier ist keine Berechtigung für {b} eingestellt, als {a} zu senden, und viele Server lehnen eine fremde Absenderadresse ab oder ersetzen sie. Deshalb wird die Antwort mit Absender {b} und Reply-To {a} gesendet. \
Wenn der Server {b} erlaubt, als {a} zu senden, stellen Sie die Berechtigung auf „Senden als“ (oder „Senden im Auftrag von“)."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const A: &str = "support@acme.example";
    const B: &str = "queue@acme.example";

    fn input(provider: Provider, permission: Permission) -> PlanInput {
        PlanInput {
            mailbox_address: A.into(),
            mailbox_name: Some("ACME Support".into()),
            smtp_account: B.into(),
            provider,
            permission,
            gmail_alias_verified: false,
        }
    }

    fn mb(name: Option<&str>, address: &str) -> Mailbox {
        Mailbox { name: name.map(str::to_string), address: address.to_string() }
    }

    fn a() -> Mailbox {
        mb(Some("ACME Support"), A)
    }

    /// (from, sender, reply_to, envelope_from) of a plan.
    fn headers(p: &Plan) -> (Mailbox, Option<Mailbox>, Option<Mailbox>, &str) {
        (p.from.clone(), p.sender.clone(), p.reply_to.clone(), p.envelope_from.as_str())
    }

    #[test]
    fn same_account_sends_as_itself_for_every_provider_and_permission() {
        for provider in [Provider::Gmail, Provider::Microsoft, Provider::Generic] {
            for permission in [Permission::None, Permission::SendOnBehalf, Permission::SendAs] {
                let mut i = input(provider, permission);
                i.smtp_account = "Support@ACME.example".into();
                let p = plan(&i).unwrap();
                assert_eq!(headers(&p), (a(), None, None, A), "{provider:?} {permission:?}");
                assert!(p.warnings.is_empty(), "{provider:?} {permission:?}: {:?}", p.warnings);
                assert_eq!(p.customer_sees.en, "The customer sees “ACME Support <support@acme.example>” as the sender.");
                assert_eq!(p.customer_sees.de, "Der Kunde sieht als Absender „ACME Support <support@acme.example>“.");
            }
        }
    }

    #[test]
    fn gmail_with_verified_alias_sends_from_a_through_b() {
        for permission in [Permission::None, Permission::SendAs] {
            let mut i = input(Provider::Gmail, permission);
            i.gmail_alias_verified = true;
            let p = plan(&i).unwrap();
            assert_eq!(headers(&p), (a(), None, None, B));
            assert!(p.warnings.is_empty(), "{:?}", p.warnings);
            assert!(p.customer_sees.en.contains("“ACME Support <support@acme.example>”"), "{}", p.customer_sees.en);
        }
    }

    #[test]
    fn gmail_without_alias_sends_from_b_with_reply_to_a_and_says_how_to_fix() {
        let p = plan(&input(Provider::Gmail, Permission::None)).unwrap();
        assert_eq!(headers(&p), (mb(Some("ACME Support"), B), None, Some(a()), B));
        assert_eq!(
            p.customer_sees.en,
            "The customer sees “ACME Support <queue@acme.example>” as the sender; their answers go to support@acme.example (Reply-To)."
        );
        assert_eq!(
            p.customer_sees.de,
            "Der Kunde sieht als Absender „ACME Support <queue@acme.example>“; seine Antworten gehen an support@acme.example (Reply-To)."
        );
        let [w] = p.warnings.as_slice() else { panic!("{:?}", p.warnings) };
        assert!(w.en.contains("Gmail shows the SMTP account queue@acme.example") && w.en.contains("“Send mail as”"), "{}", w.en);
        assert!(w.en.contains("own SMTP account"), "{}", w.en);
        assert!(w.de.contains("Gmail zeigt das SMTP-Konto queue@acme.example") && w.de.contains("„E-Mail senden als“"), "{}", w.de);
    }

    #[test]
    fn gmail_warns_that_exchange_permissions_do_not_apply() {
        for permission in [Permission::SendAs, Permission::SendOnBehalf] {
            let p = plan(&input(Provider::Gmail, permission)).unwrap();
            assert_eq!(headers(&p), (mb(Some("ACME Support"), B), None, Some(a()), B));
            assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
            assert!(p.warnings[1].en.contains("Gmail ignores it"), "{}", p.warnings[1].en);
            assert!(p.warnings[1].de.contains("Gmail beachtet sie nicht"), "{}", p.warnings[1].de);
        }
    }

    #[test]
    fn microsoft_send_on_behalf_sets_sender_b() {
        let p = plan(&input(Provider::Microsoft, Permission::SendOnBehalf)).unwrap();
        assert_eq!(headers(&p), (a(), Some(mb(None, B)), None, B));
        assert!(p.warnings.is_empty());
        assert_eq!(
            p.customer_sees.en,
            "The customer sees “queue@acme.example on behalf of ACME Support <support@acme.example>” as the sender."
        );
        assert_eq!(
            p.customer_sees.de,
            "Der Kunde sieht als Absender „queue@acme.example im Auftrag von ACME Support <support@acme.example>“."
        );
    }

    #[test]
    fn microsoft_send_as_shows_plain_a() {
        let p = plan(&input(Provider::Microsoft, Permission::SendAs)).unwrap();
        assert_eq!(headers(&p), (a(), None, None, B));
        assert!(p.warnings.is_empty());
        assert_eq!(p.customer_sees.en, "The customer sees “ACME Support <support@acme.example>” as the sender.");
    }

    #[test]
    fn microsoft_without_permission_falls_back_to_b_and_explains_the_grant() {
        let p = plan(&input(Provider::Microsoft, Permission::None)).unwrap();
        assert_eq!(headers(&p), (mb(Some("ACME Support"), B), None, Some(a()), B));
        let [w] = p.warnings.as_slice() else { panic!("{:?}", p.warnings) };
        for phrase in ["SendAsDenied", "5.7.60", "Exchange admin center", "Delegation", "Send as", "Send on behalf"] {
            assert!(w.en.contains(phrase), "{phrase}: {}", w.en);
        }
        for phrase in ["SendAsDenied", "Exchange Admin Center", "Delegierung", "„Senden als“", "„Senden im Auftrag von“"] {
            assert!(w.de.contains(phrase), "{phrase}: {}", w.de);
        }
    }

    #[test]
    fn generic_follows_the_permission_with_a_milder_warning() {
        let p = plan(&input(Provider::Generic, Permission::SendAs)).unwrap();
        assert_eq!(headers(&p), (a(), None, None, B));
        let p = plan(&input(Provider::Generic, Permission::SendOnBehalf)).unwrap();
        assert_eq!(headers(&p), (a(), Some(mb(None, B)), None, B));
        let p = plan(&input(Provider::Generic, Permission::None)).unwrap();
        assert_eq!(headers(&p), (mb(Some("ACME Support"), B), None, Some(a()), B));
        let [w] = p.warnings.as_slice() else { panic!("{:?}", p.warnings) };
        assert!(w.en.contains("set the permission to Send As") && !w.en.contains("SendAsDenied"), "{}", w.en);
        assert!(w.de.contains("„Senden als“"), "{}", w.de);
    }

    #[test]
    fn display_names_are_trimmed_optional_and_never_invented() {
        let mut i = input(Provider::Microsoft, Permission::None);
        i.mailbox_name = None;
        let p = plan(&i).unwrap();
        assert_eq!(headers(&p), (mb(None, B), None, Some(mb(None, A)), B));
        assert!(p.customer_sees.en.starts_with("The customer sees “queue@acme.example”"), "{}", p.customer_sees.en);
        i.mailbox_name = Some("   ".into());
        assert_eq!(plan(&i).unwrap().from, mb(None, B));
        i.mailbox_name = Some("  Kundenservice Müller, \"Süd\" ".into());
        i.permission = Permission::SendAs;
        assert_eq!(plan(&i).unwrap().from, mb(Some("Kundenservice Müller, \"Süd\""), A));
    }

    #[test]
    fn angle_brackets_around_a_bare_address_are_accepted() {
        let mut i = input(Provider::Microsoft, Permission::SendAs);
        i.mailbox_address = "<support@acme.example>".into();
        i.smtp_account = " <queue@acme.example> ".into();
        assert_eq!(headers(&plan(&i).unwrap()), (a(), None, None, B));
    }

    #[test]
    fn invalid_addresses_and_names_are_refused_naming_the_field() {
        let bad = ["", "support", "support@", "support@@acme.example", "a b@acme.example", "a@acme.example\r\nBcc: x@evil.example"];
        for value in bad {
            let mut i = input(Provider::Microsoft, Permission::SendAs);
            i.mailbox_address = value.into();
            let e = plan(&i).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{value:?}");
            assert!(e.message.contains("inbound mailbox"), "{}", e.message);

            let mut i = input(Provider::Microsoft, Permission::SendAs);
            i.smtp_account = value.into();
            let e = plan(&i).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{value:?}");
            assert!(e.message.contains("SMTP account"), "{}", e.message);
        }
        let mut i = input(Provider::Generic, Permission::None);
        i.mailbox_address = "ACME <support@acme.example>".into();
        let e = plan(&i).unwrap_err();
        assert!(e.message.contains("display name"), "{}", e.message);
        let mut i = input(Provider::Generic, Permission::None);
        i.mailbox_name = Some("ACME\r\nBcc: x@evil.example".into());
        let e = plan(&i).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.message.contains("line break"), "{}", e.message);
    }

    #[test]
    fn same_account_comparison_ignores_case_beyond_ascii() {
        let mut i = input(Provider::Gmail, Permission::None);
        i.mailbox_address = "jürgen@bücher.example".into();
        i.smtp_account = "JÜRGEN@BÜCHER.example".into();
        let p = plan(&i).unwrap();
        assert_eq!(headers(&p), (mb(Some("ACME Support"), "jürgen@bücher.example"), None, None, "jürgen@bücher.example"));
        // A genuinely different account is not "the same".
        i.smtp_account = "juergen@bücher.example".into();
        assert_eq!(plan(&i).unwrap().envelope_from, "juergen@bücher.example");
    }
}
