//! TLS against the real services on this machine. RabbitMQ's TLS listener on 127.0.0.1:5671,
//! with the test CA and certificates that `scripts/setup test` (scripts/rabbitmq-tls) makes: a
//! worker and the command line over `amqps://`, client certificates the broker accepts or
//! refuses, a wrong CA, bad files. PostgreSQL's sslmodes against the local server (Debian's,
//! with ssl on). The CA file of the S3 client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tradebulletin::pgstore::PgStore;
use tradebulletin::settings::Settings;

use crate::helpers::{Bus, http_get, pg_client, wait_for_status};

/// The broker's TLS listener, as the guest user (which RabbitMQ lets in from loopback only).
const AMQPS_URL: &str = "amqps://guest:guest@127.0.0.1:5671/%2f";

/// The test certificates' directory; fails the test, saying what to run, when the TLS listener
/// or the certificates are missing.
fn certs() -> PathBuf {
    let cache = std::env::var_os("TRADEBULLETIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/tradebulletin"));
    let dir = cache.join("tls");
    let listening = std::net::TcpStream::connect(("127.0.0.1", 5671)).is_ok();
    let files = ["ca.pem", "client.pem", "client.key", "other-ca.pem", "other-client.pem"]
        .iter()
        .all(|f| dir.join(f).is_file());
    assert!(
        listening && files,
        "no RabbitMQ TLS listener on 127.0.0.1:5671 (listening: {listening}) or no test certificates in {} \
         (present: {files}): run ./scripts/setup test",
        dir.display()
    );
    dir
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// `[amqp]` for the TLS listener with the given CA and client certificate files.
fn amqps_settings(ca: &str, client: Option<(&str, &str)>) -> tradebulletin::settings::AmqpSettings {
    let mut amqp = Settings::load(None).unwrap().amqp;
    amqp.url = AMQPS_URL.into();
    amqp.tls_ca_file = ca.into();
    if let Some((cert, key)) = client {
        amqp.tls_cert_file = cert.into();
        amqp.tls_key_file = key.into();
    }
    amqp
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[test]
fn a_worker_over_amqps_makes_a_bulletin_for_a_client_with_a_certificate() {
    let certs = certs();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bus = runtime.block_on(Bus::new());
    let ca = file(&certs, "ca.pem");
    // The worker trusts the test CA and shows no certificate of its own.
    let worker = bus.spawn_worker(&[
        ("TRADEBULLETIN__AMQP__URL", AMQPS_URL),
        ("TRADEBULLETIN__AMQP__TLS_CA_FILE", &ca),
    ]);
    assert!(
        wait_for_status(worker.port, "/readyz", 200, Duration::from_secs(30)),
        "the worker is not ready over amqps: {}",
        worker.log()
    );
    // The client reads its URL from a secret file, names the broker by its DNS name, and
    // shows its certificate.
    let secrets = tempfile::tempdir().unwrap();
    let url_file = secrets.path().join("amqp-url");
    std::fs::write(&url_file, "amqps://guest:guest@localhost:5671/%2f\n").unwrap();
    let job_id = unique("tls");
    let output = Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .args(["enqueue", "--region", "Heilongjiang", "--period", "2019-H1"])
        .args(["--job-id", &job_id, "--wait", "--timeout", "60"])
        .envs(bus.env())
        .env("TRADEBULLETIN__AMQP__URL_FILE", &url_file)
        .env("TRADEBULLETIN__AMQP__TLS_CA_FILE", &ca)
        .env("TRADEBULLETIN__AMQP__TLS_CERT_FILE", file(&certs, "client.pem"))
        .env("TRADEBULLETIN__AMQP__TLS_KEY_FILE", file(&certs, "client.key"))
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "enqueue over amqps failed: {}\nworker: {}",
        String::from_utf8_lossy(&output.stderr),
        worker.log()
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["job_id"], job_id.as_str());
    assert_eq!(result["summary"]["total"]["growth_pct"], 21.5);
    let location = result["pdf"]["location"].as_str().unwrap();
    let pdf = std::fs::read(location.strip_prefix("file://").unwrap()).unwrap();
    assert_eq!(result["pdf"]["sha256"], tradebulletin::storage::sha256_hex(&pdf));

    let (_, metrics) = http_get(worker.port, "/metrics").expect("metrics answer");
    assert!(metrics.contains("tradebulletin_broker_connected 1"), "{metrics}");
    for shown in [
        metrics.as_str(),
        &worker.log(),
        &String::from_utf8_lossy(&output.stderr),
    ] {
        assert!(!shown.contains("guest:guest"), "a password is shown: {shown}");
    }
    runtime.block_on(bus.cleanup());
}

#[tokio::test]
async fn the_broker_takes_a_client_certificate_of_its_ca_and_refuses_another() {
    let certs = certs();
    let ca = file(&certs, "ca.pem");
    let name = unique("tls-client-cert");
    let amqp = amqps_settings(&ca, Some((&file(&certs, "client.pem"), &file(&certs, "client.key"))));
    let connection = tradebulletin::broker::connect_with_settings(&amqp, &name)
        .await
        .expect("a client certificate signed by the test CA is taken");
    // The broker saw the certificate: its subject is on our connection.
    let listed = Command::new("rabbitmqctl")
        .args([
            "-s",
            "list_connections",
            "client_properties",
            "ssl",
            "peer_cert_subject",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let ours = listed
        .lines()
        .find(|line| line.contains(&name))
        .unwrap_or_else(|| panic!("no connection {name} in {listed}"));
    assert!(
        ours.contains("true") && ours.contains("CN=tradebulletin-test-client"),
        "{ours}"
    );
    let _ = connection.close(200, "".into()).await;

    let other = amqps_settings(
        &ca,
        Some((&file(&certs, "other-client.pem"), &file(&certs, "other-client.key"))),
    );
    let refused = tradebulletin::broker::connect_with_settings(&other, &name).await;
    let err = format!(
        "{:#}",
        refused.expect_err("a client certificate of another CA is refused")
    );
    // The broker's TLS alert, or under TLS 1.3 at times the reset that follows it before the
    // alert is read; and the files this side used.
    assert!(
        err.contains("received fatal alert: UnknownCA") || err.contains("Connection reset by peer"),
        "{err}"
    );
    assert!(
        err.contains("other-client.pem") && err.contains("amqps://guest:***@127.0.0.1:5671"),
        "{err}"
    );
    assert!(!err.contains("guest:guest"), "{err}");
}

#[test]
fn a_wrong_ca_fails_the_connection_with_a_certificate_error() {
    let certs = certs();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let amqp = amqps_settings(&file(&certs, "other-ca.pem"), None);
    let err = runtime
        .block_on(tradebulletin::broker::connect_with_settings(&amqp, "tls-wrong-ca"))
        .expect_err("a broker certificate the CA did not sign is refused");
    let err = format!("{err:#}");
    assert!(err.contains("invalid peer certificate: UnknownIssuer"), "{err}");
    assert!(
        err.contains("amqp.tls_ca_file") && err.contains("other-ca.pem"),
        "{err}"
    );

    // As a user meets it: the command fails and says why.
    let output = Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .args(["enqueue", "--region", "Jilin", "--period", "2018"])
        .env("TRADEBULLETIN__AMQP__URL", AMQPS_URL)
        .env("TRADEBULLETIN__AMQP__TLS_CA_FILE", file(&certs, "other-ca.pem"))
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains("guest:guest"), "{stderr}");
}

/// Starts a worker over amqps:// with `env` added; the error it stops with at start.
fn worker_start_error(env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .arg("worker")
        .env("TRADEBULLETIN__AMQP__URL", AMQPS_URL)
        .env("TRADEBULLETIN__HTTP__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{env:?}: {stderr}");
    stderr
}

#[test]
fn tls_files_that_are_missing_or_wrong_stop_the_worker_at_start_naming_them() {
    let certs = certs();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let missing = missing.to_str().unwrap();
    let err = worker_start_error(&[("TRADEBULLETIN__AMQP__TLS_CA_FILE", missing)]);
    assert!(err.contains(&format!("amqp.tls_ca_file {missing}")), "{err}");

    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let err = worker_start_error(&[("TRADEBULLETIN__AMQP__TLS_CA_FILE", not_pem)]);
    assert!(err.contains(&format!("{not_pem} holds no PEM certificate")), "{err}");

    let err = worker_start_error(&[
        ("TRADEBULLETIN__AMQP__TLS_CERT_FILE", &file(&certs, "client.pem")),
        ("TRADEBULLETIN__AMQP__TLS_KEY_FILE", &file(&certs, "other-client.key")),
    ]);
    assert!(
        err.contains("other-client.key is not the key of amqp.tls_cert_file"),
        "{err}"
    );
}

/// Whether the connection named `application_name` uses TLS, as the server sees it.
async fn server_sees_tls(application_name: &str) -> Option<bool> {
    let admin = pg_client(crate::helpers::PG_URL).await;
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap();
    rows.first().map(|row| row.get(0))
}

/// The local server's certificate (Debian's self-signed snakeoil one) and the name it is for.
async fn server_certificate() -> (String, String) {
    let admin = pg_client(crate::helpers::PG_URL).await;
    let row = admin.query_one("SHOW ssl_cert_file", &[]).await.unwrap();
    let path: String = row.get(0);
    let text = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-subject",
            "-nameopt",
            "sep_multiline",
            "-in",
        ])
        .arg(&path)
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let name = text
        .split([',', '\n'])
        .find_map(|part| {
            part.trim()
                .strip_prefix("DNS:")
                .or_else(|| part.trim().strip_prefix("CN="))
        })
        .unwrap_or_else(|| panic!("no name in the certificate {path}: {text}"))
        .to_string();
    (path, name)
}

#[tokio::test]
async fn postgres_honours_sslmode_as_libpq_means_it() {
    let (server_cert, server_name) = server_certificate().await;
    let cases = [
        ("sslmode=disable".to_string(), false),
        (String::new(), true), // prefer, libpq's default: the server offers TLS
        ("sslmode=require".to_string(), true),
        // The server's own certificate as the CA; verify-ca does not check the name.
        (format!("sslmode=verify-ca&sslrootcert={server_cert}"), true),
    ];
    for (parameters, tls) in cases {
        let name = unique("tls-pg");
        let url = format!("postgres://postgres@127.0.0.1:5432/test?application_name={name}&{parameters}");
        let store = PgStore::connect(&url, None).await.unwrap();
        assert_eq!(server_sees_tls(&name).await, Some(tls), "{parameters}");
        drop(store);
    }
    // verify-full: the name the certificate is for, reached at 127.0.0.1.
    let name = unique("tls-pg");
    let url = format!(
        "postgres://postgres@{server_name}:5432/test?hostaddr=127.0.0.1&application_name={name}&sslmode=verify-full"
    );
    let store = PgStore::connect(&url, Some(Path::new(&server_cert))).await.unwrap();
    assert_eq!(server_sees_tls(&name).await, Some(true));
    drop(store);

    // verify-full by address: the certificate does not name 127.0.0.1.
    let url = "postgres://postgres@127.0.0.1:5432/test?sslmode=verify-full";
    let err = PgStore::connect(url, Some(Path::new(&server_cert))).await.err();
    let err = format!("{:#}", err.expect("a certificate for another name is refused"));
    assert!(err.contains("certificate not valid for name \"127.0.0.1\""), "{err}");
    assert!(err.contains("sslmode=verify-full"), "{err}");
}

#[tokio::test]
async fn postgres_verify_full_with_a_ca_that_did_not_sign_the_server_fails_clearly() {
    let certs = certs();
    let ca = certs.join("ca.pem");
    let url = "postgres://postgres@127.0.0.1:5432/test?sslmode=verify-full";
    let err = PgStore::connect(url, Some(&ca)).await.err();
    let err = format!(
        "{:#}",
        err.expect("a server certificate the CA did not sign is refused")
    );
    assert!(err.contains("invalid peer certificate: UnknownIssuer"), "{err}");
    assert!(
        err.contains(&format!("sslmode=verify-full, CA file {}", ca.display())),
        "{err}"
    );

    // sslrootcert in the URL wins over data.tls_ca_file; a missing one is named.
    let url = "postgres://postgres@127.0.0.1:5432/test?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt";
    let err = format!("{:#}", PgStore::connect(url, Some(&ca)).await.err().unwrap());
    assert!(
        err.contains("/nonexistent/root.crt") && err.contains("sslrootcert"),
        "{err}"
    );

    // As a user meets it.
    let output = Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .args(["summary", "--region", "Heilongjiang", "--period", "2019-H1"])
        .env(
            "TRADEBULLETIN__DATA__SOURCE",
            "postgres://postgres:not-shown@127.0.0.1:5432/test?sslmode=verify-full",
        )
        .env("TRADEBULLETIN__DATA__TLS_CA_FILE", &ca)
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("UnknownIssuer") && !stderr.contains("not-shown"),
        "{stderr}"
    );
}

#[test]
fn a_storage_ca_file_that_is_missing_or_not_pem_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load(None).unwrap().storage;
    settings.url = "s3://bulletins/pdf".into();
    settings.endpoint = "https://s3.internal.example:9000".into();
    settings.tls_ca_file = dir.path().join("missing.pem").display().to_string();
    let err = format!("{:#}", tradebulletin::storage::Storage::open(&settings).unwrap_err());
    assert!(
        err.contains("storage.tls_ca_file") && err.contains("missing.pem"),
        "{err}"
    );
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    settings.tls_ca_file = not_pem.display().to_string();
    let err = format!("{:#}", tradebulletin::storage::Storage::open(&settings).unwrap_err());
    assert!(err.contains("ca.txt") && err.contains("no PEM certificate"), "{err}");
    let certs = certs();
    settings.tls_ca_file = file(&certs, "ca.pem");
    tradebulletin::storage::Storage::open(&settings).expect("a PEM CA file is taken");
}
