//! Modified UTF-7 mailbox names (RFC 3501 section 5.1.3): printable ASCII stands for itself
//! ("&" is written "&-"), everything else is UTF-16BE in base64 with "," for "/", no padding,
//! between "&" and "-".

use base64::alphabet::IMAP_MUTF7;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD};
use base64::Engine;

use crate::error::{Error, Result, Stage};

const MUTF7: GeneralPurpose = GeneralPurpose::new(&IMAP_MUTF7, NO_PAD);

fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Encodes a UTF-8 folder name for the wire.
pub fn encode_folder_name(utf8: &str) -> String {
    let mut out = String::with_capacity(utf8.len() + 8);
    let mut run: Vec<u8> = Vec::new();
    let flush = |run: &mut Vec<u8>, out: &mut String| {
        if !run.is_empty() {
            out.push('&');
            out.push_str(&MUTF7.encode(&run[..]));
            out.push('-');
            run.clear();
        }
    };
    for c in utf8.chars() {
        if is_direct(c) {
            flush(&mut run, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                run.extend_from_slice(&unit.to_be_bytes());
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Decodes a folder name as the server sends it; malformed input is an error, not a guess.
pub fn decode_folder_name(wire: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::protocol(
            Stage::SelectMailbox,
            format!("the server sent a malformed modified UTF-7 folder name {wire:?}: {why}"),
        )
    };
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(amp) = rest.find('&') {
        let (direct, tail) = rest.split_at(amp);
        if let Some(c) = direct.chars().find(|&c| !is_direct(c)) {
            return Err(bad(&format!("character {c:?} must be encoded")));
        }
        out.push_str(direct);
        let tail = &tail[1..];
        let end = tail.find('-').ok_or_else(|| bad("an encoded run is not closed by '-'"))?;
        let encoded = &tail[..end];
        rest = &tail[end + 1..];
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        let bytes = MUTF7.decode(encoded).map_err(|_| bad("invalid base64 in an encoded run"))?;
        if bytes.len() % 2 != 0 {
            return Err(bad("an encoded run is not whole UTF-16 units"));
        }
        let units = bytes.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
        for c in char::decode_utf16(units) {
            let c = c.map_err(|_| bad("an unpaired UTF-16 surrogate"))?;
            if is_direct(c) {
                return Err(bad("printable ASCII must not be encoded"));
            }
            out.push(c);
        }
    }
    if let Some(c) = rest.chars().find(|&c| !is_direct(c)) {
        return Err(bad(&format!("character {c:?} must be encoded")));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings_from_rfc3501_and_practice() {
        assert_eq!(encode_folder_name("INBOX"), "INBOX");
        assert_eq!(encode_folder_name("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode_folder_name("&"), "&-");
        assert_eq!(encode_folder_name("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(encode_folder_name("日本語"), "&ZeVnLIqe-");
        // RFC 3501 5.1.3 example.
        assert_eq!(encode_folder_name("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    }

    #[test]
    fn round_trips() {
        for name in ["Entwürfe", "&", "日本語", "a&b&&c", "Ünïcödé/Ordner", "emoji 📬 box", "", "\u{7f}x"] {
            let wire = encode_folder_name(name);
            assert!(wire.bytes().all(|b| (0x20..0x7f).contains(&b)), "{wire}");
            assert_eq!(decode_folder_name(&wire).unwrap(), name, "{wire}");
        }
    }

    #[test]
    fn malformed_names_are_errors() {
        for wire in [
            "&ZeVnLIqe",
            "&Zm9v-", /* encodes ASCII "fo" */
            "&AP-",
            "&2D0-", /* lone surrogate */
            "Entwürfe",
            "&!!-",
        ] {
            assert!(decode_folder_name(wire).is_err(), "{wire}");
        }
    }
}
