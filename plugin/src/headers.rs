//! Header value validation, run before anything reaches mail-builder: it writes header values
//! as given, so a CR or LF inside one would start a new header line (header injection).

use crate::error::{Error, Result, Stage};

/// Refuses a header value containing CR, LF or NUL.
pub fn check_header_value(field: &str, value: &str) -> Result<()> {
    if let Some(bad) = value.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        let what = match bad {
            '\0' => "a NUL character",
            _ => "a line break",
        };
        return Err(Error::invalid(
            Stage::Data,
            format!("the {field} header contains {what}, which could inject extra headers; remove it and send again"),
        ));
    }
    Ok(())
}

/// Makes text taken from a received message safe to put in a header of ours: every run of
/// control characters (CR, LF, NUL, tabs...) becomes one space. A hostile message can smuggle
/// line breaks in through encoded words, and a cosmetic value (a name, a subject) is better
/// flattened than refused.
/// "\"Name\" <addr>" with `"` and `\\` escaped in the name, or the bare address: the form
/// `parse_mailbox` reads back unchanged.
pub fn format_mailbox(m: &Mailbox) -> String {
    match &m.name {
        Some(n) => format!("\"{}\" <{}>", n.replace('\\', "\\\\").replace('"', "\\\""), m.address),
        None => m.address.clone(),
    }
}

pub fn flatten_header_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_controls = false;
    for c in value.chars() {
        if c.is_control() {
            if !in_controls {
                out.push(' ');
            }
            in_controls = true;
        } else {
            out.push(c);
            in_controls = false;
        }
    }
    out
}

/// Longest message id we write back (In-Reply-To, References). RFC 5322 lines stop at 998
/// octets; real ids are well under 100, so anything near the limit is garbage or an attack.
pub const MAX_MESSAGE_ID_LEN: usize = 250;

/// Checks a message id without angle brackets (`left@right`) before it is written back in
/// In-Reply-To or References.
pub fn check_message_id(field: &str, id: &str) -> Result<()> {
    check_header_value(field, id)?;
    let why = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_MESSAGE_ID_LEN {
        "it is longer than 250 bytes"
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains a space or a control character"
    } else if id.contains(['<', '>']) {
        "it contains '<' or '>'"
    } else {
        return Ok(());
    };
    let shown: String = id.chars().take(120).collect();
    Err(Error::invalid(Stage::Data, format!("the {field} message id {shown:?} is not valid: {why}")))
}

/// Checks a bare address (`local@domain`, no display name), such as an envelope sender.
pub fn check_address(field: &str, address: &str) -> Result<()> {
    check_header_value(field, address)?;
    check_addr_spec(field, address, address)
}

/// Checks a mailbox that was built rather than parsed from text (a plan, a parsed message)
/// before it is written.
pub fn check_mailbox(field: &str, mailbox: &Mailbox) -> Result<()> {
    if let Some(name) = &mailbox.name {
        check_header_value(field, name)?;
    }
    check_address(field, &mailbox.address)
}

/// A display name and an addr-spec, as in `"Name" <local@domain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

/// Parses `local@domain`, `Name <local@domain>` or `"Quoted, Name" <local@domain>`.
pub fn parse_mailbox(field: &str, input: &str) -> Result<Mailbox> {
    check_header_value(field, input)?;
    let trimmed = input.trim();
    let (name, address) = match trimmed.rfind('<') {
        Some(open) => {
            let Some(inner) = trimmed[open + 1..].strip_suffix('>') else {
                return Err(bad_mailbox(field, input, "an address opened with '<' must end with '>'"));
            };
            (parse_display_name(field, input, trimmed[..open].trim())?, inner)
        }
        None => (None, trimmed),
    };
    check_addr_spec(field, input, address)?;
    Ok(Mailbox { name, address: address.to_string() })
}

fn parse_display_name(field: &str, input: &str, raw: &str) -> Result<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let Some(quoted) = raw.strip_prefix('"') else {
        // An unquoted phrase; mail-builder quotes or encodes it as needed when writing. Angle
        // brackets or quotes in it mean the input is ambiguous, so refuse rather than guess.
        if raw.contains(['<', '>', '"']) {
            return Err(bad_mailbox(field, input, "the display name contains '<', '>' or '\"'; put it in double quotes"));
        }
        return Ok(Some(raw.to_string()));
    };
    let mut name = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            Some('\\') => match chars.next() {
                Some(c) => name.push(c),
                None => return Err(bad_mailbox(field, input, "the quoted display name is not closed")),
            },
            Some('"') => break,
            Some(c) => name.push(c),
            None => return Err(bad_mailbox(field, input, "the quoted display name is not closed")),
        }
    }
    if !chars.as_str().trim().is_empty() {
        return Err(bad_mailbox(field, input, "there is text between the quoted display name and the address"));
    }
    let name = name.trim();
    Ok(if name.is_empty() { None } else { Some(name.to_string()) })
}

/// Checks `local@domain`: one '@', a dot-atom local part and a domain of letters, digits,
/// hyphens and dots (non-ASCII allowed for internationalised addresses).
fn check_addr_spec(field: &str, input: &str, address: &str) -> Result<()> {
    if address.is_empty() {
        return Err(bad_mailbox(field, input, "the address is empty"));
    }
    if let Some(c) = address.chars().find(|c| c.is_whitespace() || c.is_control()) {
        let why = if c.is_whitespace() { "the address contains a space" } else { "the address contains a control character" };
        return Err(bad_mailbox(field, input, why));
    }
    if let Some(c) = address.chars().find(|c| matches!(c, '<' | '>' | '"' | '(' | ')' | '[' | ']' | '\\' | ',' | ';' | ':')) {
        return Err(bad_mailbox(field, input, &format!("the address contains the character '{c}'")));
    }
    let mut parts = address.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_mailbox(field, input, "the address must contain exactly one '@'"));
    };
    if local.is_empty() {
        return Err(bad_mailbox(field, input, "the part before '@' is empty"));
    }
    if domain.is_empty() {
        return Err(bad_mailbox(field, input, "the domain after '@' is empty"));
    }
    if local.split('.').any(str::is_empty) {
        return Err(bad_mailbox(field, input, "the part before '@' has a leading, trailing or doubled dot"));
    }
    if domain.split('.').any(str::is_empty) {
        return Err(bad_mailbox(field, input, "the domain has a leading, trailing or doubled dot"));
    }
    if !domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.') {
        return Err(bad_mailbox(field, input, "the domain may only contain letters, digits, '-' and '.'"));
    }
    Ok(())
}

fn bad_mailbox(field: &str, input: &str, why: &str) -> Error {
    // The input is free of CR/LF/NUL here (checked first), so quoting it is safe; cap its length.
    let shown: String = input.chars().take(120).collect();
    Error::invalid(
        Stage::Data,
        format!("the {field} address {shown:?} is not valid: {why}; use \"name@example.com\" or \"Name <name@example.com>\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn mb(name: Option<&str>, address: &str) -> Mailbox {
        Mailbox { name: name.map(str::to_string), address: address.to_string() }
    }

    #[test]
    fn header_values_with_cr_lf_or_nul_are_refused_naming_the_field() {
        for value in ["Hi\r\nBcc: x@evil.example", "Hi\nBcc: x", "Hi\rthere", "nul\0byte"] {
            let e = check_header_value("Subject", value).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput);
            assert_eq!(e.stage, Stage::Data);
            assert!(e.message.contains("Subject"), "{}", e.message);
        }
        assert!(check_header_value("Subject", "Grüße\tand tabs").is_ok());
    }

    #[test]
    fn accepted_mailbox_forms() {
        assert_eq!(parse_mailbox("From", "a@b.c").unwrap(), mb(None, "a@b.c"));
        assert_eq!(parse_mailbox("From", "  Ann Lee <ann@example.com> ").unwrap(), mb(Some("Ann Lee"), "ann@example.com"));
        assert_eq!(parse_mailbox("From", "<ann@example.com>").unwrap(), mb(None, "ann@example.com"));
        assert_eq!(
            parse_mailbox("From", "\"Lee, Ann \\\"Support\\\"\" <ann@example.com>").unwrap(),
            mb(Some("Lee, Ann \"Support\""), "ann@example.com")
        );
        assert_eq!(parse_mailbox("To", "\"A <x@y.z>\" <a@b.c>").unwrap(), mb(Some("A <x@y.z>"), "a@b.c"));
        assert_eq!(parse_mailbox("To", "Jürgen <jürgen@bücher.example>").unwrap(), mb(Some("Jürgen"), "jürgen@bücher.example"));
    }

    #[test]
    fn rejected_mailboxes() {
        let bad = [
            "",
            "no-at-sign",
            "@example.com",
            "ann@",
            "ann@@example.com",
            "a@b@c.d",
            "ann smith@example.com",
            "Ann <ann@example.com",
            "Ann <ann@example.com> trailing",
            "Ann <a<b@example.com>",
            "Ann <>",
            "\"ann\"@example.com",
            "\"Unclosed <ann@example.com>",
            "\"Ann\" x <ann@example.com>",
            "ann@exa mple.com",
            "ann@example..com",
            ".ann@example.com",
            "ann@example.com,evil@example.net",
            "ann@[127.0.0.1]",
            "ann\u{7}@example.com",
        ];
        for input in bad {
            let e = parse_mailbox("To", input).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{input:?}");
            assert!(e.message.contains("To"), "{}", e.message);
        }
    }

    #[test]
    fn flatten_header_text_turns_control_runs_into_one_space() {
        assert_eq!(flatten_header_text("Hi\r\nBcc: x@evil.example"), "Hi Bcc: x@evil.example");
        assert_eq!(flatten_header_text("a\0b\tc\r\n\r\n d"), "a b c  d");
        assert_eq!(flatten_header_text("Grüße"), "Grüße");
    }

    #[test]
    fn message_ids() {
        for ok in ["1.2@example.com", "abc$def@[x]", "no-at-sign", "ünï@例え.jp"] {
            assert!(check_message_id("References", ok).is_ok(), "{ok}");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_MESSAGE_ID_LEN));
        for bad in ["", "a b@c", "a\r\nBcc: x@evil@c", "a\0@c", "a>\u{20}<b@c", "<a@b>", "a\t@c", long.as_str()] {
            let e = check_message_id("References", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad:?}");
            assert!(!e.message.contains('\r') && !e.message.contains('\n'), "{:?}", e.message);
        }
    }

    #[test]
    fn built_mailboxes_and_bare_addresses_are_checked() {
        assert!(check_address("MAIL FROM", "bounce@shop.example").is_ok());
        assert!(check_address("MAIL FROM", "Ann <ann@shop.example>").is_err());
        assert!(check_address("MAIL FROM", "ann@shop.example\r\nRCPT TO:<x@evil>").is_err());
        assert!(check_mailbox("From", &mb(Some("Ann"), "ann@example.com")).is_ok());
        assert!(check_mailbox("From", &mb(Some("Ann\r\nBcc: x@evil"), "ann@example.com")).is_err());
        assert!(check_mailbox("From", &mb(None, "ann@example.com\nBcc: x@evil")).is_err());
        assert!(check_mailbox("From", &mb(None, "a, b@example.com")).is_err());
    }

    #[test]
    fn line_breaks_in_name_or_address_are_refused() {
        for input in ["Ann\r\nBcc: evil@x.y <ann@example.com>", "Ann <ann@example.com\r\nBcc: evil@x.y>", "ann@example.com\n"] {
            let e = parse_mailbox("From", input).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput);
            assert!(e.message.contains("line break"), "{}", e.message);
        }
    }

    #[test]
    fn format_mailbox_round_trips_through_parse_mailbox() {
        for name in [None, Some("ACME Support"), Some("Müller, \"Kundendienst\" \\ Team")] {
            let m = Mailbox { name: name.map(str::to_string), address: "support@acme.example".into() };
            assert_eq!(parse_mailbox("From", &format_mailbox(&m)).unwrap(), m, "{name:?}");
        }
    }
}
