//! PDF storage in a real S3-compatible store: Garage, started on this machine by
//! `scripts/garage` (which `.ci/run` runs through `scripts/setup`). Store and fetch, the same
//! job twice, a store that is down for a while, wrong credentials, presigned URLs, and the
//! worker end to end with a subscriber that downloads.

use std::time::Duration;

use serde_json::json;
use tradebulletin::settings::{Settings, StorageSettings};
use tradebulletin::storage::{Storage, sha256_hex};

use crate::helpers::{Bus, free_port, next};

const KEY_ID: &str = "GK0123456789abcdef01234567";
const KEY_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Garage's settings, with a key prefix of the test's own; starts Garage if it is down.
fn garage(prefix: &str, endpoint: &str) -> StorageSettings {
    let started = std::process::Command::new("scripts/garage")
        .output()
        .expect("scripts/garage runs");
    assert!(
        started.status.success(),
        "Garage is needed: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let mut settings = Settings::load(None).unwrap().storage;
    settings.url = format!("s3://tradebulletin-test/{prefix}");
    settings.endpoint = endpoint.to_string();
    settings.region = "garage".into();
    settings.path_style = true;
    settings.access_key_id = KEY_ID.into();
    settings.secret_access_key = KEY_SECRET.into();
    settings.presign_secs = 300;
    settings
}

fn env_for(settings: &StorageSettings) -> Vec<(String, String)> {
    vec![
        ("TRADEBULLETIN__STORAGE__URL".into(), settings.url.clone()),
        ("TRADEBULLETIN__STORAGE__ENDPOINT".into(), settings.endpoint.clone()),
        ("TRADEBULLETIN__STORAGE__REGION".into(), settings.region.clone()),
        ("TRADEBULLETIN__STORAGE__PATH_STYLE".into(), "true".into()),
        ("TRADEBULLETIN__STORAGE__PRESIGN_SECS".into(), "300".into()),
        ("AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), KEY_SECRET.into()),
    ]
}

fn unique() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[tokio::test]
async fn stores_fetches_keeps_the_first_writer_and_presigns() {
    let settings = garage(&unique(), "http://127.0.0.1:3900");
    let storage = Storage::open(&settings).unwrap();
    let key = Storage::key("jilin", "2020", "job/1");
    assert_eq!(storage.find(&key).await.unwrap(), None);
    let first = storage.put(&key, b"%PDF-first", "job/1").await.unwrap();
    assert!(
        first.location.starts_with("s3://tradebulletin-test/"),
        "{}",
        first.location
    );
    assert!(
        first.location.ends_with("/jilin/2020/job%2F1.pdf"),
        "{}",
        first.location
    );
    let second = storage.put(&key, b"%PDF-second", "job/1").await.unwrap();
    assert_eq!(second.sha256, first.sha256, "the second writer keeps the first PDF");
    assert_eq!(Storage::fetch(&first.location, &settings).await.unwrap(), b"%PDF-first");
    let found = storage.find(&key).await.unwrap().unwrap();
    assert_eq!(found.sha256, sha256_hex(b"%PDF-first"));

    let url = first.url.as_deref().expect("a presigned URL");
    assert!(url.starts_with("http://127.0.0.1:3900/tradebulletin-test/"), "{url}");
    let downloaded = tradebulletin::client::fetch_url(url).await.unwrap();
    assert_eq!(downloaded, b"%PDF-first", "the URL needs no credentials");
    assert!(first.url_expires_at.is_some());
}

#[tokio::test]
async fn wrong_credentials_give_an_error_that_names_the_cause() {
    let mut settings = garage(&unique(), "http://127.0.0.1:3900");
    settings.secret_access_key = "f".repeat(64);
    let storage = Storage::open(&settings).unwrap();
    let error = storage.put("a/b/c.pdf", b"%PDF", "c").await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("s3://tradebulletin-test/"), "{message}");
    assert!(message.contains("Invalid signature"), "{message}");
    assert!(
        message.contains("403") || message.to_lowercase().contains("signature"),
        "{message}"
    );
}

/// Forwards `port` to Garage, but only from `after` on: until then connections are refused.
fn late_proxy(port: u16, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:3900").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_down_for_a_while_delays_the_job_but_loses_nothing() {
    let port = free_port();
    let settings = garage(&unique(), &format!("http://127.0.0.1:{port}"));
    late_proxy(port, Duration::from_secs(4));
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.#").await;
    let env = env_for(&settings);
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("TRADEBULLETIN__WORKER__MAX_ATTEMPTS", "8"));
    extra.push(("TRADEBULLETIN__WORKER__RETRY_DELAY_MS", "500"));
    let worker = bus.spawn_worker(&extra);
    bus.request(json!({"job_id": "outage", "region": "Jilin", "period": "2019"}), "m")
        .await;
    let result = next(&mut results, Duration::from_secs(90)).await.expect("a result");
    assert_eq!(result.status(), "succeeded", "{} {}", result.body, worker.log());
    assert!(
        result.body["attempt"].as_u64().unwrap() > 1,
        "it was retried: {}",
        result.body
    );
    let location = result.body["pdf"]["location"].as_str().unwrap();
    let pdf = Storage::fetch(location, &settings).await.unwrap();
    assert_eq!(result.body["pdf"]["sha256"], sha256_hex(&pdf));
    bus.cleanup().await;
}

#[test]
fn the_worker_stores_in_s3_and_a_subscriber_downloads_with_the_right_sha256() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settings = garage(&unique(), "http://127.0.0.1:3900");
    let bus = runtime.block_on(Bus::new());
    let env = env_for(&settings);
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _worker = bus.spawn_worker(&extra);
    let downloads = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tradebulletin");
    let subscriber = bus.spawn_subscriber(&[], downloads.path(), &env);
    let output = std::process::Command::new(bin)
        .args([
            "enqueue",
            "--region",
            "Heilongjiang",
            "--period",
            "2019-H1",
            "--job-id",
            "s3-job",
            "--wait",
            "--timeout",
            "90",
        ])
        .envs(bus.env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let location = result["pdf"]["location"].as_str().unwrap();
    assert!(
        location.starts_with("s3://tradebulletin-test/") && location.ends_with("/heilongjiang/2019-H1/s3-job.pdf"),
        "{location}"
    );
    assert!(
        result["pdf"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:3900/")
    );
    crate::helpers::assert_schema("result", &result);
    let listened = subscriber.wait_with_output().unwrap();
    assert!(listened.status.success());
    let pdf = std::fs::read(downloads.path().join("s3-job.pdf")).expect("the subscriber downloaded the PDF");
    assert_eq!(result["pdf"]["sha256"], sha256_hex(&pdf));
    runtime.block_on(bus.cleanup());
}
