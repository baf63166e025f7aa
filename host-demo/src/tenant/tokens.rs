//! OAuth2 tokens at rest: the access and refresh tokens are encrypted with XChaCha20-Poly1305
//! (RustCrypto `chacha20poly1305`) under a key the operator provides, so a copy of the database
//! (a backup, a support bundle) does not hand out mailbox access.
//!
//! - The key: `MAILPLUG_SECRET_KEY_FILE` (a file readable by its owner only) or
//!   `MAILPLUG_SECRET_KEY`, 32 bytes written as 64 hex digits or in base64.
//! - Rotation: the previous key goes to `MAILPLUG_SECRET_KEY_OLD_FILE` / `MAILPLUG_SECRET_KEY_OLD`;
//!   it is only used to read. A row under the old key (or a plaintext row of a version before
//!   encryption) is re-encrypted under the current key the next time it is read or written.
//! - Each value is stored as `mpenc1:<key id>:<base64url(nonce || ciphertext)>`; the key id is
//!   derived from the key (SHA-256), so no id must be configured. The row's tenant, client,
//!   username and column are authenticated data: a ciphertext moved to another row or column
//!   does not decrypt.
//! - Without a key, tokens are neither stored nor read: the error names the variables (EN/DE).

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{params, Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::engine::Tokens;
use crate::error::HostError;

pub const KEY_FILE_VAR: &str = "MAILPLUG_SECRET_KEY_FILE";
pub const KEY_VAR: &str = "MAILPLUG_SECRET_KEY";
pub const OLD_KEY_FILE_VAR: &str = "MAILPLUG_SECRET_KEY_OLD_FILE";
pub const OLD_KEY_VAR: &str = "MAILPLUG_SECRET_KEY_OLD";

const PREFIX: &str = "mpenc1:";
const NONCE_LEN: usize = 24;

/// One 256-bit key and its id.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Key {
        // SHA-256 from ring, which the store already uses for content hashes.
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(b"mailplug secret key id\0");
        h.update(bytes);
        let id = h.finish().as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
        Key { id, cipher: XChaCha20Poly1305::new(bytes.into()) }
    }
}

/// The keys for tokens at rest: the current one (encrypts and decrypts) and an old one
/// (decrypts only, during a rotation). A configuration problem is kept and reported when a
/// token is read or written, so mailboxes without OAuth2 are not affected by it.
pub struct SecretKeys {
    current: Option<Key>,
    old: Option<Key>,
    problem: Option<String>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeys")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field("old", &self.old.as_ref().map(|k| &k.id))
            .field("problem", &self.problem)
            .finish()
    }
}

/// Decodes a key written as 64 hex digits or as base64 of 32 bytes.
fn decode_key(text: &str, source: &str) -> Result<[u8; 32], String> {
    let text = Zeroizing::new(text.trim().to_string());
    let bytes: Zeroizing<Vec<u8>> = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Zeroizing::new((0..32).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0)).collect())
    } else {
        Zeroizing::new(STANDARD.decode(text.as_bytes()).or_else(|_| URL_SAFE_NO_PAD.decode(text.as_bytes())).map_err(|_| {
            format!(
                "{source} is not a key: write 32 random bytes as 64 hex digits (`openssl rand -hex 32`) or in base64 \
                 / {source} ist kein Schlüssel: 32 Zufallsbytes als 64 Hex-Ziffern (`openssl rand -hex 32`) oder Base64 angeben"
            )
        })?)
    };
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{source} holds {} bytes, a key must have 32 (`openssl rand -hex 32`) / {source} enthält {} Bytes, ein Schlüssel muss 32 haben",
            bytes.len(),
            bytes.len()
        )
    })
}

/// Reads a key file: a regular file that only its owner may read.
fn read_key_file(var: &str, path: &Path) -> Result<[u8; 32], String> {
    use std::os::unix::fs::PermissionsExt;
    let source = format!("{var} ({})", path.display());
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("cannot read the key file {source}: {e} / Schlüsseldatei {source} nicht lesbar: {e}")
    })?;
    if !meta.is_file() {
        return Err(format!("{source} is not a file / {source} ist keine Datei"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the key file {source} may be read by others (mode {mode:04o}): run `chmod 600 {p}` \
             / die Schlüsseldatei {source} ist für andere lesbar (Modus {mode:04o}): `chmod 600 {p}` ausführen",
            p = path.display()
        ));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read the key file {source}: {e} / Schlüsseldatei {source} nicht lesbar: {e}")
    })?);
    decode_key(&text, &source)
}

/// One key from a file variable or a value variable (not both).
fn key_from(
    get: &dyn Fn(&str) -> Option<String>,
    file_var: &str,
    value_var: &str,
) -> Result<Option<[u8; 32]>, String> {
    let file = get(file_var).filter(|v| !v.trim().is_empty());
    let value = get(value_var).map(Zeroizing::new).filter(|v| !v.trim().is_empty());
    match (file, value) {
        (Some(_), Some(_)) => Err(format!(
            "both {file_var} and {value_var} are set: set only one / {file_var} und {value_var} sind beide gesetzt: nur eine setzen"
        )),
        (Some(f), None) => read_key_file(file_var, Path::new(f.trim())).map(Some),
        (None, Some(v)) => decode_key(&v, value_var).map(Some),
        (None, None) => Ok(None),
    }
}

impl SecretKeys {
    /// The keys from the process environment.
    pub fn from_env() -> SecretKeys {
        SecretKeys::from_vars(&|k| std::env::var(k).ok())
    }

    /// The keys from variables looked up by `get` (the environment, or a test's map).
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> SecretKeys {
        let current = key_from(get, KEY_FILE_VAR, KEY_VAR);
        let old = key_from(get, OLD_KEY_FILE_VAR, OLD_KEY_VAR);
        match (current, old) {
            (Ok(c), Ok(o)) => SecretKeys::new(c.as_ref(), o.as_ref()),
            (Err(e), _) | (_, Err(e)) => SecretKeys { current: None, old: None, problem: Some(e) },
        }
    }

    /// Keys given directly (tests, embedding hosts with their own key store).
    pub fn new(current: Option<&[u8; 32]>, old: Option<&[u8; 32]>) -> SecretKeys {
        let problem = match (current, old) {
            (None, Some(_)) => Some(format!(
                "{OLD_KEY_FILE_VAR} is set without {KEY_FILE_VAR}: during a rotation both are needed \
                 / {OLD_KEY_FILE_VAR} ist ohne {KEY_FILE_VAR} gesetzt: beim Schlüsselwechsel werden beide gebraucht"
            )),
            _ => None,
        };
        SecretKeys { current: current.map(Key::new), old: old.map(Key::new), problem }
    }

    /// No key: tokens can be neither stored nor read.
    pub fn none() -> SecretKeys {
        SecretKeys { current: None, old: None, problem: None }
    }

    /// The id of the current key, if one is configured.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Fails (with what to do) unless tokens can be encrypted.
    pub fn ready(&self) -> Result<(), HostError> {
        if let Some(p) = &self.problem {
            return Err(HostError::Storage(format!("OAuth2 tokens: {p}")));
        }
        self.current.as_ref().map(|_| ()).ok_or_else(|| {
            HostError::Storage(format!(
                "OAuth2 tokens are only stored encrypted, and no key is configured: put 32 random bytes in a file \
                 readable only by this user (`openssl rand -hex 32 > key && chmod 600 key`) and set {KEY_FILE_VAR} to its path \
                 (or {KEY_VAR} to the key itself), then run the command again \
                 / OAuth2-Tokens werden nur verschlüsselt gespeichert, und es ist kein Schlüssel eingerichtet: 32 Zufallsbytes \
                 in eine nur für diesen Benutzer lesbare Datei schreiben (`openssl rand -hex 32 > key && chmod 600 key`) und \
                 {KEY_FILE_VAR} auf ihren Pfad setzen (oder {KEY_VAR} auf den Schlüssel), dann den Befehl wiederholen"
            ))
        })
    }

    /// Encrypts `plain` for one column of one row.
    pub(crate) fn seal(&self, aad: &[u8], plain: &str) -> Result<String, HostError> {
        self.ready()?;
        let key = self.current.as_ref().ok_or_else(|| HostError::Storage("no key".into()))?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = key
            .cipher
            .encrypt(&nonce, Payload { msg: plain.as_bytes(), aad })
            .map_err(|_| HostError::Storage("OAuth2 tokens: encryption failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}:{}", key.id, URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Decrypts a stored value; the bool says whether it should be rewritten under the
    /// current key (a plaintext row of an older version, or the old key's).
    pub(crate) fn open(&self, aad: &[u8], stored: &str) -> Result<(String, bool), HostError> {
        self.ready()?;
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            // Written before tokens were encrypted (tokens never contain ':').
            return Ok((stored.to_string(), true));
        };
        let (id, data) = rest.split_once(':').ok_or_else(|| corrupt("no key id"))?;
        let (key, rewrite) = match (&self.current, &self.old) {
            (Some(k), _) if k.id == id => (k, false),
            (_, Some(k)) if k.id == id => (k, true),
            _ => {
                return Err(HostError::OAuth {
                    kind: "UnknownKey".into(),
                    needs_reauthorization: true,
                    message: format!(
                        "the stored tokens were encrypted with key {id}, which is neither {KEY_FILE_VAR} (key {cur}) nor \
                         {OLD_KEY_FILE_VAR}: configure that key as the old key, or consent again with `mailplug oauth login` \
                         / die gespeicherten Tokens sind mit Schlüssel {id} verschlüsselt, der weder {KEY_FILE_VAR} (Schlüssel \
                         {cur}) noch {OLD_KEY_FILE_VAR} ist: diesen Schlüssel als alten Schlüssel einrichten oder mit \
                         `mailplug oauth login` neu zustimmen",
                        cur = self.current_id().unwrap_or("-"),
                    ),
                })
            }
        };
        let blob = URL_SAFE_NO_PAD.decode(data).map_err(|_| corrupt("not base64"))?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(corrupt("too short"));
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| corrupt("the authentication tag does not match (altered, or copied from another account)"))?;
        let text = String::from_utf8(plain).map_err(|_| corrupt("not text"))?;
        Ok((text, rewrite))
    }
}

fn corrupt(why: &str) -> HostError {
    HostError::OAuth {
        kind: "CorruptTokens".into(),
        needs_reauthorization: true,
        message: format!(
            "the stored tokens cannot be decrypted ({why}): consent again with `mailplug oauth login` \
             / die gespeicherten Tokens lassen sich nicht entschlüsseln: mit `mailplug oauth login` neu zustimmen"
        ),
    }
}

/// The authenticated data binding a ciphertext to its row and column.
pub(crate) fn aad(tenant: &str, client: &str, username: &str, column: &str) -> Vec<u8> {
    format!("mailplug oauth token v1\0{tenant}\0{client}\0{username}\0{column}").into_bytes()
}

/// Reads the tokens of one account; rows under an old key or in plaintext are rewritten under
/// the current key right away.
pub fn load(conn: &Connection, keys: &SecretKeys, tenant: &str, client: &str, username: &str) -> Result<Option<Tokens>, HostError> {
    let row = conn
        .query_row(
            "SELECT access_token, refresh_token, expires_at_ms, scopes, account FROM oauth_tokens
             WHERE tenant = ?1 AND client = ?2 AND username = ?3",
            params![tenant, client, username],
            |r| {
                Ok((
                    Zeroizing::new(r.get::<_, String>(0)?),
                    r.get::<_, Option<String>>(1)?.map(Zeroizing::new),
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()
        .map_err(|e| HostError::Storage(format!("reading OAuth2 tokens: {e}")))?;
    let Some((access, refresh, expires, scopes, account)) = row else { return Ok(None) };
    let (access_token, mut rewrite) = keys.open(&aad(tenant, client, username, "access_token"), &access)?;
    let refresh_token = match refresh {
        Some(r) => {
            let (plain, again) = keys.open(&aad(tenant, client, username, "refresh_token"), &r)?;
            rewrite |= again;
            Some(plain)
        }
        None => None,
    };
    let tokens = Tokens {
        access_token,
        refresh_token,
        expires_at: expires.map(|v| v as u64),
        scopes: scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        account,
    };
    if rewrite {
        save(conn, keys, tenant, client, username, &tokens)?;
        // The old row's bytes: zeroed in its page (secure_delete) and the WAL cut back, so a
        // plaintext copy does not linger in the files.
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    Ok(Some(tokens))
}

/// Replaces the tokens of one account, encrypted under the current key.
pub fn save(conn: &Connection, keys: &SecretKeys, tenant: &str, client: &str, username: &str, t: &Tokens) -> Result<(), HostError> {
    let access = keys.seal(&aad(tenant, client, username, "access_token"), &t.access_token)?;
    let refresh = t.refresh_token.as_deref().map(|r| keys.seal(&aad(tenant, client, username, "refresh_token"), r)).transpose()?;
    // Replaced rows are overwritten with zeros, not only unlinked.
    conn.pragma_update(None, "secure_delete", true).map_err(|e| HostError::Storage(format!("database settings: {e}")))?;
    conn.execute(
        "INSERT INTO oauth_tokens (tenant, client, username, access_token, refresh_token, expires_at_ms, scopes, account, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (tenant, client, username) DO UPDATE SET access_token = excluded.access_token,
           refresh_token = excluded.refresh_token, expires_at_ms = excluded.expires_at_ms,
           scopes = excluded.scopes, account = excluded.account, updated_at_ms = excluded.updated_at_ms",
        params![
            tenant,
            client,
            username,
            access,
            refresh,
            t.expires_at.map(|v| v as i64),
            t.scopes.join(" "),
            t.account,
            crate::driver::now_ms() as i64
        ],
    )
    .map(|_| ())
    .map_err(|e| HostError::Storage(format!("saving OAuth2 tokens: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            access_token: "ya29.access-AAAA".into(),
            refresh_token: Some("1//refresh-BBBB".into()),
            expires_at: Some(42),
            scopes: vec!["openid".into(), "mail".into()],
            account: Some("a@example.com".into()),
        }
    }

    fn table() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE oauth_tokens (tenant TEXT NOT NULL, client TEXT NOT NULL, username TEXT NOT NULL,
             access_token TEXT NOT NULL, refresh_token TEXT, expires_at_ms INTEGER, scopes TEXT NOT NULL, account TEXT,
             updated_at_ms INTEGER NOT NULL, PRIMARY KEY (tenant, client, username));",
        )
        .unwrap();
        c
    }

    fn raw(c: &Connection) -> (String, Option<String>) {
        c.query_row("SELECT access_token, refresh_token FROM oauth_tokens", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    }

    #[test]
    fn keys_in_hex_and_base64_and_bad_ones_named() {
        let hex = "00".repeat(31) + "01";
        assert!(decode_key(&hex, "K").is_ok());
        assert!(decode_key(&STANDARD.encode([7u8; 32]), "K").is_ok());
        let e = decode_key("short", "MAILPLUG_SECRET_KEY").unwrap_err();
        assert!(e.contains("MAILPLUG_SECRET_KEY") && !e.contains("short"), "{e}");
        let e = decode_key(&STANDARD.encode([7u8; 16]), "K").unwrap_err();
        assert!(e.contains("16 bytes"), "{e}");
    }

    #[test]
    fn rotation_reads_the_old_key_and_rewrites_under_the_new() {
        let c = table();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        save(&c, &SecretKeys::new(Some(&a), None), "t", "c", "u", &tokens()).unwrap();
        let (access, refresh) = raw(&c);
        assert!(access.starts_with(PREFIX) && !access.contains("access-AAAA"), "{access}");
        assert!(refresh.unwrap().starts_with(PREFIX));
        let rotating = SecretKeys::new(Some(&b), Some(&a));
        assert_eq!(load(&c, &rotating, "t", "c", "u").unwrap().unwrap().access_token, "ya29.access-AAAA");
        assert!(raw(&c).0.contains(rotating.current_id().unwrap()), "rewritten under the new key");
        let only_new = SecretKeys::new(Some(&b), None);
        assert_eq!(load(&c, &only_new, "t", "c", "u").unwrap().unwrap().refresh_token.as_deref(), Some("1//refresh-BBBB"));
        let e = load(&c, &SecretKeys::new(Some(&a), None), "t", "c", "u").unwrap_err().to_string();
        assert!(e.contains("encrypted with key") && e.contains(OLD_KEY_FILE_VAR), "{e}");
    }

    #[test]
    fn ciphertexts_are_bound_to_their_row_and_column() {
        let c = table();
        let k = SecretKeys::new(Some(&[3u8; 32]), None);
        save(&c, &k, "t", "c", "u", &tokens()).unwrap();
        c.execute("UPDATE oauth_tokens SET username = 'other'", []).unwrap();
        assert!(load(&c, &k, "t", "c", "other").is_err());
        c.execute("UPDATE oauth_tokens SET username = 'u', access_token = refresh_token", []).unwrap();
        let e = load(&c, &k, "t", "c", "u").unwrap_err();
        assert!(matches!(&e, HostError::OAuth { kind, .. } if kind == "CorruptTokens"), "{e}");
    }

    #[test]
    fn plaintext_rows_are_read_and_encrypted_and_no_key_is_refused() {
        let c = table();
        c.execute(
            "INSERT INTO oauth_tokens VALUES ('t', 'c', 'u', 'plain-access', 'plain-refresh', NULL, '', NULL, 0)",
            [],
        )
        .unwrap();
        let e = load(&c, &SecretKeys::none(), "t", "c", "u").unwrap_err().to_string();
        assert!(e.contains(KEY_FILE_VAR) && e.contains("kein Schlüssel"), "{e}");
        assert!(save(&c, &SecretKeys::none(), "t", "c", "u", &tokens()).is_err());
        let k = SecretKeys::new(Some(&[4u8; 32]), None);
        assert_eq!(load(&c, &k, "t", "c", "u").unwrap().unwrap().access_token, "plain-access");
        let (access, refresh) = raw(&c);
        assert!(access.starts_with(PREFIX) && refresh.unwrap().starts_with(PREFIX));
    }

    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new().prefix("mailplug-key-").tempdir().unwrap();
        let p = tmp.path().join("key");
        std::fs::write(&p, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = p.display().to_string();
        let vars = |k: &str| (k == KEY_FILE_VAR).then(|| path.clone());
        let e = SecretKeys::from_vars(&vars).ready().unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("0644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretKeys::from_vars(&vars).ready().is_ok());
        let both = |k: &str| match k {
            KEY_FILE_VAR => Some(path.clone()),
            KEY_VAR => Some("cd".repeat(32)),
            _ => None,
        };
        assert!(SecretKeys::from_vars(&both).ready().unwrap_err().to_string().contains("set only one"));
    }
}
