//! Capabilities (CAPA), STLS and the login: USER/PASS or a SASL mechanism.

use super::*;

impl Pop3Session {
    pub(super) fn send_capa(&mut self) {
        self.caps = None;
        if let Some(check) = self.check.as_mut() {
            *check = Check::default();
        }
        self.write(b"CAPA\r\n");
        self.phase = Phase::Capa { body: false };
    }

    pub(super) fn note_capability(&mut self, line: &[u8]) -> Result<()> {
        if self.caps.is_some() && !self.link.unverified() {
            if let Some(check) = self.check.as_mut() {
                check.note(line);
            }
        }
        let Some(caps) = self.caps.as_mut() else { return Ok(()) };
        caps.lines += 1;
        if caps.lines > MAX_CAPA_LINES {
            return Err(Error::limit(
                Stage::Capabilities,
                format!(
                    "the server sent more than {MAX_CAPA_LINES} CAPA lines without ending the list; the session was stopped. The server may be faulty or hostile: check it with its administrator"
                ),
            ));
        }
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(name) = words.next() else { return Ok(()) };
        if name.eq_ignore_ascii_case(b"STLS") {
            caps.stls = true;
        } else if name.eq_ignore_ascii_case(b"PIPELINING") {
            caps.pipelining = true;
        } else if name.eq_ignore_ascii_case(b"SASL") {
            for word in words {
                let known = KNOWN_MECHANISMS.iter().find(|m| word.eq_ignore_ascii_case(m.name().as_bytes()));
                if let Some(m) = known {
                    if !caps.sasl.iter().any(|s| s == m.name()) {
                        caps.sasl.push(m.name().to_string());
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn after_capabilities(&mut self) -> Result<()> {
        self.report(Step::Capabilities, |s| s.capabilities_detail());
        if self.link.needs_starttls() {
            if self.caps.as_ref().is_some_and(|c| c.stls) {
                self.write(b"STLS\r\n");
                self.phase = Phase::Stls;
                return Ok(());
            }
            return Err(Error::policy(
                Stage::Starttls,
                format!(
                    "{} does not offer STLS, so the connection cannot be encrypted; no credentials were sent. Enable STLS on the server or switch the mailbox to implicit TLS (usually port 995)",
                    self.mailbox.server.host
                ),
            ));
        }
        self.start_auth()
    }

    pub(super) fn start_auth(&mut self) -> Result<()> {
        self.link.check_credentials_allowed()?;
        let offered: &[String] = self.caps.as_ref().map_or(&[], |c| c.sasl.as_slice());
        // `None`: USER/PASS.
        let mechanism = match &self.mailbox.credentials {
            // PLAIN needs one round trip instead of two, and carries any password byte.
            Credentials::Basic { .. } => {
                offered.iter().any(|m| m == Mechanism::Plain.name()).then_some(Mechanism::Plain)
            }
            creds @ Credentials::OAuth2 { .. } => match sasl::select(creds, offered) {
                Some(mechanism) => Some(mechanism),
                None => {
                    return Err(Error::protocol(
                        Stage::Authenticate,
                        format!(
                            "the server does not offer OAuth2 login by SASL {} over POP3, so the access token cannot be used; enable OAuth2 for POP3 on the server, change the configured mechanism, or use a password",
                            sasl::oauth_wanted(creds)
                        ),
                    ))
                }
            },
        };
        self.report(Step::Mechanisms, |s| s.mechanisms_detail(mechanism));
        match mechanism {
            Some(mechanism) => self.start_sasl(mechanism),
            None => {
                let command = format!("USER {}\r\n", self.mailbox.credentials.username());
                self.write(command.as_bytes());
                self.phase = Phase::Auth(AuthStep::User);
                Ok(())
            }
        }
    }

    pub(super) fn sasl_response(&self, mechanism: Mechanism) -> Result<String> {
        sasl::initial_response(mechanism, &self.mailbox.credentials).ok_or_else(|| {
            Error::protocol(Stage::Authenticate, format!("{} cannot be used with these credentials", mechanism.name()))
        })
    }

    pub(super) fn start_sasl(&mut self, mechanism: Mechanism) -> Result<()> {
        let initial = self.sasl_response(mechanism)?;
        let mut command = format!("AUTH {}", mechanism.name());
        if command.len() + 1 + initial.len() + 2 <= MAX_COMMAND_LINE {
            command.push(' ');
            command.push_str(&initial);
            self.phase = Phase::Auth(AuthStep::AwaitResult(mechanism));
        } else {
            self.phase = Phase::Auth(AuthStep::AwaitPrompt(mechanism));
        }
        command.push_str("\r\n");
        self.write(command.as_bytes());
        Ok(())
    }

    pub(super) fn on_auth_line(&mut self, step: AuthStep, line: &[u8]) -> Result<()> {
        let stage = Stage::Authenticate;
        let status = response::status(line, stage)?;
        match (step, status) {
            (_, Status::Err(text)) => Err(self.rejected(text)),
            (AuthStep::AwaitPrompt(mechanism), Status::Continue(_)) => {
                let mut answer = self.sasl_response(mechanism)?;
                answer.push_str("\r\n");
                self.write(answer.as_bytes());
                self.phase = Phase::Auth(AuthStep::AwaitResult(mechanism));
                Ok(())
            }
            (AuthStep::AwaitResult(mechanism), Status::Continue(challenge)) => {
                // RFC 7628 3.2.3 / Google's XOAUTH2: the token was refused and the challenge
                // says why; answer with the dummy response to get the final -ERR.
                let dummy: &[u8] = match mechanism {
                    Mechanism::OAuthBearer => b"AQ==\r\n",
                    Mechanism::XOAuth2 => b"\r\n",
                    Mechanism::Plain | Mechanism::Login => {
                        return Err(Error::protocol(
                            stage,
                            format!("the server asked for more data after AUTH {}, which takes none", mechanism.name()),
                        ))
                    }
                };
                self.oauth_challenge = Some(decode_challenge(challenge));
                self.write(dummy);
                self.phase = Phase::Auth(AuthStep::AwaitFinal);
                Ok(())
            }
            (AuthStep::User, Status::Ok(_)) => {
                let Credentials::Basic { password, .. } = &self.mailbox.credentials else {
                    return Err(Error::protocol(stage, "USER/PASS login needs a password"));
                };
                if password.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return Err(Error::invalid(
                        stage,
                        "the password contains a line break or NUL character, which POP3 USER/PASS login cannot carry; change the password",
                    ));
                }
                let command = format!("PASS {password}\r\n");
                self.write(command.as_bytes());
                self.phase = Phase::Auth(AuthStep::Pass);
                Ok(())
            }
            (AuthStep::AwaitResult(_) | AuthStep::AwaitFinal | AuthStep::Pass, Status::Ok(_)) => {
                self.report(Step::Login, |s| format!("logged in as {}", s.mailbox.credentials.username()));
                self.start_listing();
                Ok(())
            }
            _ => Err(unexpected(line, stage)),
        }
    }

    /// The error for a -ERR during login. RFC 2449 response codes tell a locked or broken
    /// mailbox apart from wrong credentials.
    pub(super) fn rejected(&self, text: &[u8]) -> Error {
        let stage = Stage::Authenticate;
        let username = self.mailbox.credentials.username();
        let error = match response::response_code(text).as_deref() {
            Some("IN-USE") => Error::protocol(
                stage,
                "the mailbox is locked by another POP3 session (another client is fetching it); stop the other client or retry later",
            ),
            Some("SYS/TEMP") => Error::protocol(stage, "the server has a temporary problem logging in; retry later"),
            Some("SYS/PERM") => Error::protocol(
                stage,
                "the server has a permanent problem with this mailbox; contact the mail provider",
            ),
            _ => match &self.mailbox.credentials {
                Credentials::Basic { .. } => Error::auth(
                    stage,
                    format!(
                        "the server rejected the user name \"{username}\" or its password; check the credentials (some providers require an app password or POP3 to be enabled for the account)"
                    ),
                ),
                Credentials::OAuth2 { .. } => {
                    let details = self.oauth_challenge.as_deref().map(|c| format!(" (server details: {c})")).unwrap_or_default();
                    let e = Error::auth(
                        stage,
                        format!(
                            "the server rejected the OAuth2 access token for \"{username}\"; it may have expired or lack the POP scope, or the account may not allow POP{details}"
                        ),
                    );
                    match &self.oauth_challenge {
                        Some(c) => e.with_quote(c.clone()),
                        None => e,
                    }
                }
            },
        };
        error.with_reply(response::reply("-ERR", text))
    }
}

/// An OAuth error challenge is base64 JSON; show it decoded when it is text.
pub(super) fn decode_challenge(challenge: &[u8]) -> String {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(challenge) {
        Ok(json) if std::str::from_utf8(&json).is_ok() => crate::error::quote(&json, 80),
        _ => crate::error::quote(challenge, 80),
    }
}
