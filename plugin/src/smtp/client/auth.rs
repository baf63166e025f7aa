//! Authentication: STARTTLS when required, then the SASL mechanism and its exchange.

use super::*;

impl SmtpSession {
    /// Capabilities are known: STARTTLS first if required, then authenticate.
    pub(super) fn after_capabilities(&mut self, actions: &mut Vec<Action>) -> Result<()> {
        if self.link.needs_starttls() {
            if !self.caps.starttls {
                return Err(Error::policy(
                    Stage::Starttls,
                    "the server does not offer STARTTLS, so the connection cannot be encrypted and no credentials were sent; turn TLS on (port 465) or fix the server's STARTTLS setup",
                ));
            }
            actions.push(Action::Write(b"STARTTLS\r\n".to_vec()));
            self.state = State::Starttls;
            return Ok(());
        }
        self.link.check_credentials_allowed()?;
        if self.caps.auth.is_empty() {
            return Err(Error::policy(
                Stage::Authenticate,
                "the server offers no authentication (no AUTH in its EHLO reply), and mail is only submitted authenticated; use the provider's submission port (587 or 465)",
            ));
        }
        let Some(mech) = sasl::select(&self.credentials, &self.caps.auth) else {
            let kind = match self.credentials {
                Credentials::Basic { .. } => "password (PLAIN or LOGIN)",
                Credentials::OAuth2 { .. } => match sasl::oauth_wanted(&self.credentials) {
                    "OAUTHBEARER or XOAUTH2" => "OAuth2 (OAUTHBEARER or XOAUTH2)",
                    pinned => pinned,
                },
            };
            return Err(Error::policy(
                Stage::Authenticate,
                format!(
                    "the server offers authentication by {} only, but this queue is configured for {kind}; change the credentials type",
                    self.caps.auth.join(", ")
                ),
            ));
        };
        let command = match mech {
            Mechanism::Login => {
                self.state = State::Auth(AuthStep::LoginUser);
                b"AUTH LOGIN\r\n".to_vec()
            }
            _ => {
                let Some(ir) = sasl::initial_response(mech, &self.credentials) else {
                    return Err(Error::protocol(Stage::Authenticate, "no initial response for the selected mechanism"));
                };
                self.state = State::Auth(AuthStep::InitialResponse(mech));
                format!("AUTH {} {ir}\r\n", mech.name()).into_bytes()
            }
        };
        self.progress(actions, Step::Mechanisms, || {
            let using = format!("using AUTH {}", mech.name());
            match self.quoted(&self.caps.auth.join(" ")) {
                Some(offered) => format!("offered: {offered}; {using}"),
                None => using,
            }
        });
        actions.push(Action::Write(command));
        Ok(())
    }

    pub(super) fn on_auth_reply(&mut self, step: AuthStep, reply: Reply, actions: &mut Vec<Action>) -> Result<()> {
        let mech = match step {
            AuthStep::InitialResponse(m) | AuthStep::OAuthFailure(m) => m,
            _ => Mechanism::Login,
        };
        match (step, reply.code) {
            // 235 is the standard success; some servers (Postfix's smtp-sink among them) answer
            // another 2xx, which still means the login succeeded.
            (AuthStep::InitialResponse(_) | AuthStep::LoginResult, 200..=299) => {
                self.progress(actions, Step::Login, || format!("logged in as {}", self.credentials.username()));
                self.begin_envelope(actions)?;
            }
            (AuthStep::InitialResponse(Mechanism::XOAuth2 | Mechanism::OAuthBearer), 334) => {
                // The token was refused and the challenge (base64 JSON) says why. RFC 7628
                // 3.2.3: OAUTHBEARER answers the dummy response %x01 (base64 "AQ=="); Google's
                // XOAUTH2 expects an empty line. The server then sends its final 5xx.
                let detail = decode_challenge(&reply);
                let dummy: &[u8] = if mech == Mechanism::OAuthBearer { b"AQ==\r\n" } else { b"\r\n" };
                actions.push(Action::Write(dummy.to_vec()));
                self.state = State::Auth(AuthStep::OAuthFailure(mech));
                let shown = detail.as_deref().map_or_else(|| "no detail given".to_string(), |d| format!("server detail: {d}"));
                let error = Error::auth(
                    Stage::Authenticate,
                    format!(
                        "the server rejected the OAuth2 token for {} ({shown}); refresh the token or check that it grants mail sending",
                        self.credentials.username()
                    ),
                );
                self.pending_failure = Some(match detail {
                    Some(d) => error.with_quote(d),
                    None => error,
                });
            }
            (AuthStep::LoginUser, 334) => {
                let answer = sasl::login_step(self.credentials.username());
                actions.push(Action::Write(format!("{answer}\r\n").into_bytes()));
                self.state = State::Auth(AuthStep::LoginPassword);
            }
            (AuthStep::LoginPassword, 334) => {
                let answer = sasl::login_step(self.credentials.secret());
                actions.push(Action::Write(format!("{answer}\r\n").into_bytes()));
                self.state = State::Auth(AuthStep::LoginResult);
            }
            (_, 400..=599) => {
                let server_reply = self.scrubbed(reply.to_server_reply());
                let error = match (step, self.pending_failure.take()) {
                    (AuthStep::OAuthFailure(_), Some(e)) => e,
                    _ => {
                        let basic = matches!(self.credentials, Credentials::Basic { .. });
                        // Password advice (app passwords, Basic retired) misleads an OAuth2 setup.
                        let known = explain::lookup(reply.code, &server_reply.text).filter(|k| basic || !k.is_about_password());
                        let fix = match (reply.code, basic) {
                            (400..=499, _) => "try again later; if it keeps failing, check the account's sign-in settings",
                            (_, true) => "check the user name and password (or app password), and that SMTP AUTH is enabled for the account",
                            (_, false) => "refresh the token or check that it grants mail sending",
                        };
                        let when = if reply.code < 500 { "temporarily " } else { "" };
                        let what = format!(
                            "the server {when}rejected the {} login for {} ({})",
                            mech.name(),
                            self.credentials.username(),
                            redact(&reply.summary(), &self.secret_forms())
                        );
                        Error::auth(Stage::Authenticate, explained(what, known, fix))
                    }
                };
                // 535 and other 5xx: fix the credentials first; 454 and other 4xx: try later.
                return Err(error.with_reply(server_reply).with_retry(retry_for(reply.code)));
            }
            _ => {
                return Err(Error::protocol(
                    Stage::Authenticate,
                    format!(
                        "the server answered {} during {} authentication, which the exchange does not allow",
                        reply.code,
                        mech.name()
                    ),
                )
                .with_reply(self.scrubbed(reply.to_server_reply())));
            }
        }
        Ok(())
    }
}
