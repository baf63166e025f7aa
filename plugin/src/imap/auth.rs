//! The login command of a connection: LOGIN or AUTHENTICATE with the mechanism chosen from
//! the server's capabilities, its continuations, and the error for a rejected login.

use std::collections::VecDeque;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::command::{Command, LiteralMode, Wire};
use super::connection::has_capability;
use crate::config::Credentials;
use crate::error::{Error, Result, ServerReply, Stage};
use crate::sasl::{self, Mechanism};

/// An authentication command in flight.
#[derive(Debug)]
pub(super) struct Auth {
    pub(super) tag: String,
    /// What the user sees in errors: "LOGIN", "AUTHENTICATE PLAIN", ...
    pub(super) method: &'static str,
    /// Answers to the server's "+" continuations, in order.
    pub(super) answers: VecDeque<Wire>,
    /// For OAuth mechanisms: the reply to an error challenge, after which the server sends
    /// its tagged NO.
    pub(super) on_error_challenge: Option<&'static [u8]>,
    /// The decoded error challenge, kept for the admin.
    pub(super) challenge: Option<String>,
}

/// What `Auth::begin` produced: the state to wait in, the first line to write, and the SASL
/// mechanisms the server offered (for a check's report).
pub(super) struct AuthStart {
    pub(super) auth: Auth,
    pub(super) first: Wire,
    pub(super) offered: Vec<String>,
}

impl Auth {
    /// Chooses how to log in with `creds` from the server's capabilities (AUTHENTICATE PLAIN,
    /// else the LOGIN command unless LOGINDISABLED, else AUTHENTICATE LOGIN; OAuth2:
    /// OAUTHBEARER or XOAUTH2) and builds the command under `tag`. The caller must have checked
    /// that credentials may cross the connection.
    pub(super) fn begin(tag: String, creds: &Credentials, caps: &[String], literal_mode: LiteralMode) -> Result<AuthStart> {
        let offered: Vec<String> = caps
            .iter()
            .filter_map(|c| c.get(..5).filter(|p| p.eq_ignore_ascii_case("AUTH=")).map(|_| c[5..].to_string()))
            .collect();
        let offers = |m: Mechanism| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name()));
        let mech = match creds {
            Credentials::Basic { username, password } => {
                if offers(Mechanism::Plain) {
                    Mechanism::Plain
                } else if !has_capability(caps, "LOGINDISABLED") {
                    let cmd = Command::new(&tag, "LOGIN")
                        .string(username, literal_mode)
                        .string(password, literal_mode)
                        .finish();
                    let mut parts: VecDeque<Wire> = cmd.parts.into();
                    let first = parts.pop_front().unwrap_or_default();
                    let auth = Auth { tag, method: "LOGIN", answers: parts, on_error_challenge: None, challenge: None };
                    return Ok(AuthStart { auth, first, offered });
                } else if offers(Mechanism::Login) {
                    Mechanism::Login
                } else {
                    return Err(Error::policy(
                        Stage::Authenticate,
                        "the server disabled password LOGIN and offers no password mechanism this plugin supports (PLAIN, LOGIN); enable TLS or one of them on the server",
                    ));
                }
            }
            Credentials::OAuth2 { .. } => sasl::select(creds, &offered).ok_or_else(|| {
                Error::policy(
                    Stage::Authenticate,
                    format!(
                        "the server does not offer {}, so the OAuth2 token cannot be used; use a password, enable OAuth2 on the server, or change the configured mechanism",
                        sasl::oauth_wanted(creds)
                    ),
                )
            })?,
        };
        let (method, on_error_challenge): (&'static str, Option<&'static [u8]>) = match mech {
            Mechanism::Plain => ("AUTHENTICATE PLAIN", None),
            Mechanism::Login => ("AUTHENTICATE LOGIN", None),
            // XOAUTH2 expects an empty answer to its error challenge, OAUTHBEARER a ^A (RFC 7628 3.2.3).
            Mechanism::XOAuth2 => ("AUTHENTICATE XOAUTH2", Some(b"\r\n")),
            Mechanism::OAuthBearer => ("AUTHENTICATE OAUTHBEARER", Some(b"AQ==\r\n")),
        };
        let mut first = Wire(format!("{tag} {method}").into_bytes());
        let mut answers = VecDeque::new();
        let crlf = |s: String| {
            let mut w = s.into_bytes();
            w.extend_from_slice(b"\r\n");
            Wire(w)
        };
        match sasl::initial_response(mech, creds) {
            Some(ir) if has_capability(caps, "SASL-IR") => {
                first.0.push(b' ');
                first.0.extend_from_slice(ir.as_bytes());
            }
            Some(ir) => answers.push_back(crlf(ir)),
            None => {
                answers.push_back(crlf(sasl::login_step(creds.username())));
                answers.push_back(crlf(sasl::login_step(creds.secret())));
            }
        }
        first.0.extend_from_slice(b"\r\n");
        let auth = Auth { tag, method, answers, on_error_challenge, challenge: None };
        Ok(AuthStart { auth, first, offered })
    }

    /// The bytes that answer the server's "+" continuation `text`.
    pub(super) fn answer(&mut self, text: String) -> Result<Wire> {
        if let Some(answer) = self.answers.pop_front() {
            return Ok(answer);
        }
        match self.on_error_challenge.take() {
            Some(reply) => {
                let decoded = STANDARD.decode(text.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                self.challenge = Some(decoded.unwrap_or(text));
                Ok(Wire(reply.to_vec()))
            }
            None => Err(Error::protocol(
                Stage::Authenticate,
                format!("the server sent an unexpected challenge during {}", self.method),
            )),
        }
    }

    /// The error for a rejected login: who, how, what the server said, and what to check.
    pub(super) fn rejected(&self, creds: &Credentials, reply: ServerReply) -> Error {
        let user = creds.username();
        let hint = match creds {
            Credentials::Basic { .. } => {
                "check the user name and password (or app password), and that IMAP access is enabled for the mailbox"
            }
            Credentials::OAuth2 { .. } => {
                "check that the access token is current, was issued for this user and has the IMAP scope"
            }
        };
        let shown = self.challenge.as_deref().map(|c| crate::error::quote(c.as_bytes(), 300));
        let detail = shown.as_deref().map(|c| format!(" (server detail: {c})")).unwrap_or_default();
        let e = Error::auth(Stage::Authenticate, format!("the server rejected {} for user {user:?}{detail}; {hint}", self.method))
            .with_reply(reply);
        match shown {
            Some(s) => e.with_quote(s),
            None => e,
        }
    }
}
