//! TLS from the PostgreSQL store to its server: a throwaway PostgreSQL 15 cluster that this
//! test starts itself (initdb and pg_ctl from /usr/lib/postgresql/15/bin, as the `postgres`
//! user, in a temporary folder, on a free port, `ssl = on` with the rig CA's server
//! certificate, and only `hostssl` lines in pg_hba.conf, so that a connection without TLS is
//! refused by the server). The rig's own cluster is not touched. Without PostgreSQL 15 or the
//! rig's certificates the test says so and passes without checking anything.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailplug_host::error::HostError;
use mailplug_host::store::postgres::PgStore;
use mailplug_host::store::{Location, MessageQuery, Store};
use mailplug_tests::pg::unique;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn rig_tls() -> PathBuf {
    PathBuf::from(std::env::var("MAILPLUG_RIG_DIR").unwrap_or_else(|_| "/tmp/mailplug-rig".into())).join("tls")
}

/// A PostgreSQL cluster of this test's own, stopped (immediately) and removed when dropped.
struct Cluster {
    dir: PathBuf,
    port: u16,
    /// The superuser's password, in a 0600 file.
    password_file: PathBuf,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(args);
    c
}

impl Cluster {
    /// None (saying why) when PostgreSQL 15, the postgres user or the rig's certificates are
    /// missing.
    fn start() -> Option<Cluster> {
        let tls = rig_tls();
        if !Path::new(PG_BIN).join("initdb").exists() || !tls.join("server.key").exists() {
            assert!(std::env::var_os("MAILPLUG_REQUIRE_PG").is_none(), "PostgreSQL 15 or the rig's certificates are missing");
            eprintln!("SKIPPED: needs {PG_BIN}/initdb and the rig's certificates in {}", tls.display());
            return None;
        }
        // A free port, taken by the server right after (loopback only).
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(unique("b-pgtls"));
        std::fs::create_dir_all(dir.join("run")).expect("dir");
        let password = unique("pw");
        let password_file = dir.join("password");
        std::fs::write(&password_file, &password).expect("password");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let pg_pw = dir.join("initdb.pw");
        std::fs::write(&pg_pw, &password).expect("password");
        let dir_s = dir.to_str().expect("utf8").to_string();
        run(Command::new("chown").args(["-R", "postgres:postgres", &dir_s]), "chown");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let data = dir.join("data");
        let data_s = data.to_str().expect("utf8").to_string();
        run(
            &mut as_postgres(&[
                &format!("{PG_BIN}/initdb"),
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--pwfile",
                pg_pw.to_str().expect("utf8"),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]),
            "initdb",
        );
        let _ = std::fs::remove_file(&pg_pw);
        // The rig CA's server certificate (localhost, 127.0.0.1, 127.0.0.2), key private to postgres.
        std::fs::copy(tls.join("server.pem"), data.join("server.crt")).expect("certificate");
        std::fs::copy(tls.join("server.key"), data.join("server.key")).expect("key");
        run(Command::new("chown").args(["postgres:postgres", &format!("{data_s}/server.crt"), &format!("{data_s}/server.key")]), "chown");
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let conf = format!(
            "\n# mailplug tests/e2e/pg_tls.rs\nlisten_addresses = '127.0.0.1,127.0.0.3'\nport = {port}\n\
             unix_socket_directories = '{run}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             max_connections = 40\nshared_buffers = 16MB\nfsync = off\nlogging_collector = off\n",
            run = dir.join("run").display()
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        text += &conf;
        std::fs::write(data.join("postgresql.conf"), text).expect("postgresql.conf");
        // TLS or nothing over TCP.
        std::fs::write(data.join("pg_hba.conf"), "local all postgres trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.3/32 scram-sha-256\n")
            .expect("pg_hba.conf");
        let cluster = Cluster { dir: dir.clone(), port, password_file };
        run(
            &mut as_postgres(&[&format!("{PG_BIN}/pg_ctl"), "start", "-D", &data_s, "-l", &format!("{dir_s}/postgres.log"), "-w", "-t", "120"]),
            "pg_ctl start",
        );
        Some(cluster)
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }

    fn connect(&self, host: &str, query: &str) -> Result<PgStore, HostError> {
        PgStore::connect(&self.url(host, query), Some(&self.password_file))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(&[&format!("{PG_BIN}/pg_ctl"), "stop", "-D", data.to_str().unwrap_or(""), "-m", "immediate", "-w", "-t", "60"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Another CA, which signed nothing the server has.
fn other_ca(dir: &Path) -> PathBuf {
    let (key, pem) = (dir.join("other-ca.key"), dir.join("other-ca.pem"));
    run(
        Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not the rig CA", "-keyout"]).arg(&key).arg("-out").arg(&pem),
        "openssl",
    );
    pem
}

fn tls_error(r: Result<PgStore, HostError>) -> String {
    match r {
        Err(HostError::Tls { server, message }) => {
            assert!(server.starts_with("PostgreSQL at "), "{server}");
            message
        }
        Err(other) => panic!("expected a TLS error, got: {other}"),
        Ok(_) => panic!("expected a TLS error, but it connected"),
    }
}

#[test]
fn verify_full_reaches_a_tls_server_and_a_wrong_ca_or_name_is_a_typed_tls_error() {
    let Some(c) = Cluster::start() else { return };
    let ca = rig_tls().join("ca.pem");
    let ca_q = format!("sslrootcert={}", ca.display());

    // verify-full with the rig's CA: connects (the server refuses anything but TLS over TCP),
    // the schema is made and the store answers.
    let store = c.connect("localhost", &format!("?sslmode=verify-full&{ca_q}")).expect("verify-full with the right CA connects");
    assert_eq!(store.schema_version().expect("schema"), 1);
    assert_eq!(store.count_messages("b-tls").expect("count"), 0);
    // By IP address too (the certificate names 127.0.0.1).
    c.connect("127.0.0.1", &format!("?sslmode=verify-full&{ca_q}")).expect("verify-full by IP");
    // Through the store selection, as `--store` gives it.
    let loc = Location::parse(&c.url("localhost", &format!("?sslmode=verify-full&{ca_q}")), Some(c.password_file.clone()));
    let handle = Store::open(&loc).expect("the selected store connects");
    assert_eq!(handle.kind(), "postgres");

    // Without TLS the server itself refuses (pg_hba has hostssl lines only): TLS was in use above.
    let e = c.connect("localhost", "").err().expect("no TLS, refused by the server").to_string();
    assert!(e.contains("pg_hba.conf") || e.contains("no encryption"), "{e}");

    // Another CA: a typed TLS error that says what to do.
    let wrong = other_ca(&c.dir);
    let m = tls_error(c.connect("localhost", &format!("?sslmode=verify-full&sslrootcert={}", wrong.display())));
    assert!(m.contains("not signed by a trusted authority") && m.contains("sslrootcert"), "{m}");
    // Without sslrootcert the rig's CA is not a system one: the same.
    let m = tls_error(c.connect("localhost", "?sslmode=verify-full"));
    assert!(m.contains("trusted authority"), "{m}");
    // `require` checks the chain too (mailplug never talks to an unverified server).
    tls_error(c.connect("localhost", &format!("?sslmode=require&sslrootcert={}", wrong.display())));

    // A name the certificate does not carry (127.0.0.3): verify-full refuses, require (chain only) connects.
    let m = tls_error(c.connect("127.0.0.3", &format!("?sslmode=verify-full&{ca_q}")));
    assert!(m.contains("not valid for this host name"), "{m}");
    c.connect("127.0.0.3", &format!("?sslmode=require&{ca_q}")).expect("require does not check the name");
    c.connect("127.0.0.3", &format!("?sslmode=verify-ca&{ca_q}")).expect("verify-ca does not check the name");

    // No password in any of these errors.
    let password = std::fs::read_to_string(&c.password_file).expect("password");
    let e = PgStore::connect(&c.url("localhost", &format!("?sslmode=verify-full&sslrootcert={}", wrong.display())).replacen("postgres@", &format!("postgres:{password}@"), 1), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(!e.contains(&password), "{e}");
}

#[test]
fn a_remote_server_without_tls_is_refused_before_connecting() {
    for url in ["postgres://u@db.example.test:5432/x", "postgres://u@db.example.test/x?sslmode=prefer", "postgres://u@192.0.2.7/x?sslmode=disable"] {
        let e = PgStore::connect(url, None).err().expect("refused").to_string();
        assert!(e.contains("without TLS") && e.contains("sslmode=verify-full"), "{url}: {e}");
    }
    // sslrootcert without TLS, and client certificates: refused, saying why.
    let e = PgStore::connect("postgres://u@127.0.0.1/x?sslrootcert=/ca.pem", None).err().expect("refused").to_string();
    assert!(e.contains("sslmode=verify-full"), "{e}");
    let e = PgStore::connect("postgres://u@127.0.0.1/x?sslmode=verify-full&sslcert=/c.pem&sslkey=/k.pem", None).err().expect("refused").to_string();
    assert!(e.contains("sslcert is not supported"), "{e}");
}
