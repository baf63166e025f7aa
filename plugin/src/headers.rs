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
    fn line_breaks_in_name_or_address_are_refused() {
        for input in ["Ann\r\nBcc: evil@x.y <ann@example.com>", "Ann <ann@example.com\r\nBcc: evil@x.y>", "ann@example.com\n"] {
            let e = parse_mailbox("From", input).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput);
            assert!(e.message.contains("line break"), "{}", e.message);
        }
    }
}
