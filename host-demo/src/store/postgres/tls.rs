//! TLS to PostgreSQL: `sslmode` and `sslrootcert` from the URL, rustls (with the host's `ring`
//! provider) through tokio-postgres-rustls, the system's root certificates plus `sslrootcert`.
//!
//! | `sslmode` | what mailplug does |
//! |---|---|
//! | absent, `disable`, `allow`, `prefer` | no TLS: only a server on this machine is accepted (loopback or a Unix socket); `allow` and `prefer` never fall back silently |
//! | `require`, `verify-ca` | TLS; the certificate chain is verified (stricter than libpq's `require`, which checks nothing), the host name is not |
//! | `verify-full` | TLS; the chain and the host name are verified |
//!
//! Client certificates (`sslcert`, `sslkey`) are not supported and refused, as is any
//! other `ssl...` parameter, so a setting is never silently ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::HostError;

/// What the URL asks of the connection's security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS (also `allow` and `prefer`).
    Disable,
    /// TLS, the chain verified, not the host name (also `verify-ca`).
    Require,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

/// A parsed connection URL: the driver's configuration (without the TLS parameters), the mode
/// and the extra root certificate file.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

fn invalid(why: impl std::fmt::Display) -> HostError {
    // Never the URL itself: it may hold a password.
    HostError::Storage(format!("the PostgreSQL URL is not valid ({why}); write it as postgres://user@host:port/database"))
}

/// Parses `url` (`postgres://user@host:port/database?sslmode=...&sslrootcert=FILE`).
pub fn parse(url: &str) -> Result<Target, HostError> {
    let url = url.trim();
    let (mut mode, mut root_cert) = (SslMode::Disable, None);
    // The TLS parameters are this module's; the rest goes to the driver as written.
    let rest = match url::Url::parse(url) {
        Ok(mut u) if u.query().is_some() => {
            // The other parameters are kept byte for byte as written: re-encoding them would
            // turn `%20` into `+`, which the driver does not read as a space.
            let query = u.query().unwrap_or_default().to_string();
            let mut kept: Vec<&str> = Vec::new();
            for segment in query.split('&').filter(|s| !s.is_empty()) {
                let Some((k, v)) = url::form_urlencoded::parse(segment.as_bytes()).next() else { continue };
                match &*k {
                    "sslmode" => {
                        mode = match &*v {
                            "disable" | "allow" | "prefer" => SslMode::Disable,
                            "require" | "verify-ca" => SslMode::Require,
                            "verify-full" => SslMode::VerifyFull,
                            other => {
                                return Err(invalid(format_args!(
                                    "sslmode={other} is not one of disable, require, verify-ca, verify-full"
                                )))
                            }
                        }
                    }
                    "sslrootcert" => root_cert = Some(PathBuf::from(&*v)),
                    other if other.starts_with("ssl") => {
                        return Err(invalid(format_args!(
                            "{other} is not supported: mailplug verifies the server with sslmode=verify-full and sslrootcert=FILE and has no client certificates"
                        )))
                    }
                    _ => kept.push(segment),
                }
            }
            let kept = kept.join("&");
            u.set_query(Some(kept.as_str()).filter(|k| !k.is_empty()));
            u.to_string()
        }
        _ => url.to_string(),
    };
    if root_cert.is_some() && mode == SslMode::Disable {
        return Err(invalid("sslrootcert is given but sslmode asks for no TLS: add sslmode=verify-full"));
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(invalid)?;
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    Ok(Target { config, mode, root_cert })
}

/// The system's root certificates plus those in `extra` (PEM).
fn roots(extra: Option<&Path>) -> Result<RootCertStore, HostError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra {
        let bad = |why: String| HostError::Storage(format!("sslrootcert {}: {why}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut added = 0;
        for item in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: CertificateDer<'static> = item.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
            roots.add(cert).map_err(|e| bad(format!("a certificate is not valid: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("holds no certificate".into()));
        }
    }
    Ok(roots)
}

/// The rustls configuration for `mode` (not `Disable`).
pub fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<ClientConfig, HostError> {
    let roots = Arc::new(roots(root_cert)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::Storage(format!("TLS setup for PostgreSQL: {e}")))?;
    Ok(match mode {
        SslMode::VerifyFull | SslMode::Disable => builder.with_root_certificates(roots).with_no_client_auth(),
        SslMode::Require => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| HostError::Storage(format!("TLS setup for PostgreSQL: {e}")))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner))).with_no_client_auth()
        }
    })
}

/// `verify-ca`: the chain is verified as usual; a certificate for another name is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS failure in a connection error, for the admin: None when it is not one.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut tls = false;
    while let Some(err) = cur {
        let rustls_err = err
            .downcast_ref::<rustls::Error>()
            .or_else(|| err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| i.downcast_ref::<rustls::Error>()));
        if let Some(r) = rustls_err {
            return Some(explain(r));
        }
        let text = err.to_string();
        if text.contains("server does not support TLS") {
            return Some(
                "the server does not offer TLS (ssl = off): turn TLS on in postgresql.conf, or reach it through a local TLS tunnel \
                 / der Server bietet kein TLS an (ssl = off): TLS in postgresql.conf einschalten"
                    .into(),
            );
        }
        tls |= text.contains("TLS handshake");
        cur = err.source();
    }
    tls.then(|| e.to_string())
}

fn explain(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is not signed by a trusted authority ({e}); give its CA with sslrootcert=FILE in the URL \
             / das Zertifikat des Servers ist nicht von einer vertrauenswürdigen Stelle signiert; die CA mit sslrootcert=DATEI angeben"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => format!(
            "the server's certificate is not valid for this host name ({e}); connect with the name on the certificate \
             / das Zertifikat des Servers gilt nicht für diesen Hostnamen; den Namen aus dem Zertifikat verwenden"
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => format!(
            "the server's certificate has expired ({e}); renew it / das Zertifikat des Servers ist abgelaufen; erneuern"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_the_url() {
        let t = parse("postgres://u@db.example:5433/mail?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x").unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(t.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(t.config.get_dbname(), Some("mail"));
        assert_eq!(t.config.get_ports(), [5433]);
        for (mode, want) in [("require", SslMode::Require), ("verify-ca", SslMode::Require), ("prefer", SslMode::Disable), ("disable", SslMode::Disable)] {
            assert_eq!(parse(&format!("postgres://u@h/d?sslmode={mode}")).unwrap().mode, want, "{mode}");
        }
        assert_eq!(parse("postgres://u@h/d").unwrap().mode, SslMode::Disable);
        assert_eq!(parse("postgres://u@h/d").unwrap().config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn other_parameters_reach_the_driver_as_written() {
        let t = parse("postgres://u@h/d?options=-c%20search_path%3Dtenant_a&sslmode=require&application_name=mail%20plug").unwrap();
        assert_eq!(t.config.get_options(), Some("-c search_path=tenant_a"));
        assert_eq!(t.config.get_application_name(), Some("mail plug"));
        assert_eq!(t.mode, SslMode::Require);
    }

    #[test]
    fn unknown_ssl_settings_are_refused_without_echoing_the_url() {
        for url in [
            "postgres://u:hunter22@h/d?sslmode=verify-everything",
            "postgres://u:hunter22@h/d?sslmode=require&sslcert=/c.pem",
            "postgres://u:hunter22@h/d?sslrootcert=/ca.pem",
        ] {
            let e = parse(url).err().expect("refused").to_string();
            assert!(!e.contains("hunter22"), "{e}");
            assert!(e.contains("ssl"), "{e}");
        }
    }

    #[test]
    fn an_unreadable_root_certificate_file_is_named() {
        let e = client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).err().unwrap().to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }
}
