//! The worker against the real RabbitMQ: one request, inline facts, many requests over two
//! workers, malformed messages, retries, a killed worker and a graceful stop. Each test
//! declares its own queue and exchange names.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tradebulletin::storage::sha256_hex;

use crate::helpers::{
    Bus, assert_schema, collect, next, pdf_text, slow_typst, squeeze, typst_starts, wait_for_typst_starts,
};

const WAIT: Duration = Duration::from_secs(60);

fn hlj(job_id: &str) -> serde_json::Value {
    json!({"job_id": job_id, "region": "Heilongjiang", "period": "2019-H1"})
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_gives_one_result_there_and_on_reply_to() {
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.#").await;
    let reply = bus
        .channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let mut replies = bus.consume(reply.name().as_str()).await;
    let worker = bus.spawn_worker(&[]);
    let properties = tradebulletin::broker::json_properties()
        .with_reply_to(reply.name().clone())
        .with_correlation_id("corr-42".into());
    bus.publish(hlj("job-one").to_string().as_bytes(), "m-1", properties)
        .await;

    let result = next(&mut results, WAIT).await.expect("a result");
    assert_schema("request", &hlj("job-one"));
    assert_schema("result", &result.body);
    assert_eq!(result.routing_key, "bulletin.succeeded.heilongjiang.2019-H1");
    assert_eq!(result.status(), "succeeded");
    assert_eq!(result.job_id(), "job-one");
    assert_eq!(result.properties.correlation_id().as_ref().unwrap().as_str(), "corr-42");
    assert_eq!(result.body["summary"]["total"]["growth_pct"], 21.5);
    let location = result.body["pdf"]["location"].as_str().unwrap();
    let path = location.strip_prefix("file://").unwrap();
    let pdf = std::fs::read(path).unwrap();
    assert_eq!(result.body["pdf"]["sha256"], sha256_hex(&pdf));
    assert_eq!(result.body["pdf"]["bytes"], pdf.len());
    assert!(path.ends_with("/heilongjiang/2019-H1/job-one.pdf"), "{path}");

    let (status, metrics) = crate::helpers::http_get(worker.port, "/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("tradebulletin_jobs_total{outcome=\"ack\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tradebulletin_stage_seconds_count{stage=\"compile\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tradebulletin_broker_connected 1"), "{metrics}");
    assert!(!metrics.contains("guest"), "no credentials in metrics");
    assert_eq!(crate::helpers::http_get(worker.port, "/healthz").unwrap().0, 200);
    assert!(crate::helpers::wait_for_status(
        worker.port,
        "/readyz",
        200,
        Duration::from_secs(10)
    ));
    let healthcheck = std::process::Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .arg("healthcheck")
        .env("TRADEBULLETIN__HTTP__LISTEN", format!("0.0.0.0:{}", worker.port))
        .status()
        .unwrap();
    assert!(healthcheck.success());

    let replied = next(&mut replies, WAIT).await.expect("a reply");
    assert_eq!(replied.body, result.body);
    assert_eq!(
        replied.properties.correlation_id().as_ref().unwrap().as_str(),
        "corr-42"
    );
    assert!(
        next(&mut results, Duration::from_secs(2)).await.is_none(),
        "exactly one result"
    );
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_facts_of_another_province_make_its_bulletin() {
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.*.gansu.#").await;
    let _worker = bus.spawn_worker(&[]);
    let facts = json!([
        {"region": "Gansu", "period": "2022-Q2", "flow": "exports", "value": 3_450_000_000u64, "currency": "CNY"},
        {"region": "Gansu", "period": "2022-Q2", "flow": "imports", "value": 8_120_000_000u64, "currency": "CNY"},
        {"region": "Gansu", "period": "2021-Q2", "flow": "exports", "value": 3_000_000_000u64, "currency": "CNY"},
        {"region": "Gansu", "period": "2021-Q2", "flow": "imports", "value": 8_000_000_000u64, "currency": "CNY"},
        {"region": "Gansu", "period": "2022-Q2", "partner": "Kazakhstan", "flow": "total", "value": 1_230_000_000u64, "currency": "CNY"},
    ]);
    bus.request(
        json!({"job_id": "gansu", "region": "甘肃", "period": "2022-04..06", "language": "zh", "facts": facts}),
        "m",
    )
    .await;
    let result = next(&mut results, WAIT).await.expect("a result");
    assert_eq!(result.status(), "succeeded", "{:?}", result.body);
    assert_eq!(result.routing_key, "bulletin.succeeded.gansu.2022-Q2");
    let path = result.body["pdf"]["location"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap()
        .to_string();
    let text: String = pdf_text(std::path::Path::new(&path)).split_whitespace().collect();
    for expected in [
        "2022年第二季度，甘肃省货物贸易进出口总值115.7亿元，同比增长5.2%",
        "出口34.5亿元，同比增长15.0%",
        "Kazakhstan",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in {text}");
    }
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_requests_over_two_workers_each_render_once() {
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.#").await;
    let _a = bus.spawn_worker(&[]);
    let _b = bus.spawn_worker(&[]);
    let regions = ["Jilin", "Beijing", "Guangdong", "Tibet", "Xinjiang"];
    for i in 0..50 {
        let body =
            json!({"job_id": format!("many-{i}"), "region": regions[i % 5], "period": format!("{}", 2017 + i % 8)});
        bus.request(body, &format!("m-{i}")).await;
    }
    let received = collect(&mut results, 50, Duration::from_secs(240)).await;
    assert_eq!(received.len(), 50);
    assert!(
        received.iter().all(|r| r.status() == "succeeded"),
        "{:?}",
        received.iter().find(|r| r.status() != "succeeded")
    );
    let ids: std::collections::HashSet<&str> = received.iter().map(|r| r.job_id()).collect();
    assert_eq!(ids.len(), 50, "each job has one result");
    assert!(
        next(&mut results, Duration::from_secs(2)).await.is_none(),
        "no job was done twice"
    );
    assert_eq!(bus.stored_pdfs().len(), 50);
    assert_eq!(bus.depth(&bus.topology.request_queue).await, 0);
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_each_fail_clearly_and_the_worker_carries_on() {
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.failed.#").await;
    let mut good = bus.results("bulletin.succeeded.#").await;
    let _worker = bus.spawn_worker(&[]);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let huge = format!(
        r#"{{"region":"Jilin","period":"2020","pad":"{}"}}"#,
        "x".repeat(1_100_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("not-json", b"hello".to_vec(), "invalid_request", "not valid JSON"),
        ("empty", Vec::new(), "invalid_request", "empty"),
        ("array", b"[1,2,3]".to_vec(), "invalid_request", "JSON object"),
        ("null", b"null".to_vec(), "invalid_request", "JSON object"),
        ("region-number", br#"{"region":230000,"period":"2019"}"#.to_vec(), "invalid_request", "`region` must be a string"),
        ("period-object", br#"{"region":"Jilin","period":{"y":2019}}"#.to_vec(), "invalid_request", "`period` must be a string"),
        ("unknown-region", br#"{"region":"Narnia","period":"2019"}"#.to_vec(), "unknown_region", "Narnia"),
        ("markup-region", br##"{"region":"#panic(\"x\")","period":"2019"}"##.to_vec(), "unknown_region", "is not known"),
        ("impossible-period", br#"{"region":"Jilin","period":"2019-Q5"}"#.to_vec(), "invalid_request", "2019-Q5"),
        ("backwards-period", br#"{"region":"Jilin","period":"2019-09..02"}"#.to_vec(), "invalid_request", "backwards"),
        ("no-data", br#"{"region":"Jilin","period":"2099"}"#.to_vec(), "no_data", "2099"),
        ("huge", huge.into_bytes(), "invalid_request", "at most 1048576"),
        ("deep", deep.into_bytes(), "invalid_request", "not valid JSON"),
        ("bad-utf8", b"{\"region\":\"Jil\xffin\",\"period\":\"2019\"}".to_vec(), "invalid_request", "UTF-8"),
        ("bad-language", br#"{"region":"Jilin","period":"2019","language":"klingon"}"#.to_vec(), "invalid_request", "`language`"),
        (
            "bad-facts",
            br#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":"-3","currency":"USD"}]}"#.to_vec(),
            "invalid_request",
            "facts[0], field `value`",
        ),
        (
            "inconsistent-facts",
            br#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":100,"currency":"USD"},{"region":"Jilin","period":"2019","flow":"exports","value":10,"currency":"USD"},{"region":"Jilin","period":"2019","flow":"imports","value":10,"currency":"USD"}]}"#.to_vec(),
            "inconsistent_data",
            "facts[0]",
        ),
        ("facts-not-array", br#"{"region":"Jilin","period":"2019","facts":"lots"}"#.to_vec(), "invalid_request", "`facts` must be an array"),
        ("long-job-id", format!(r#"{{"job_id":"{}","region":"Jilin","period":"2019"}}"#, "j".repeat(300)).into_bytes(), "invalid_request", "`job_id`"),
    ];
    for (id, body, _, _) in &cases {
        bus.publish(body, id, tradebulletin::broker::json_properties()).await;
    }
    bus.request(json!({"job_id": "after", "region": "Jilin", "period": "2019"}), "after")
        .await;
    let received = collect(&mut results, cases.len(), WAIT).await;
    assert_eq!(
        received.len(),
        cases.len(),
        "every malformed message has a failed result"
    );
    for (id, _, code, needle) in &cases {
        let r = received
            .iter()
            .find(|r| r.job_id() == *id)
            .unwrap_or_else(|| panic!("no result for {id}"));
        assert_eq!(r.body["error"]["code"], *code, "{id}: {}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{id}: `{needle}` not in {message}");
    }
    let unknown = received.iter().find(|r| r.job_id() == "not-json").unwrap();
    assert_eq!(unknown.routing_key, "bulletin.failed.unknown.unknown");
    let after = next(&mut good, WAIT).await.expect("the good job after them");
    assert_eq!(after.job_id(), "after");
    assert_eq!(bus.depth(&bus.topology.request_queue).await, 0);
    assert_eq!(
        bus.depth(&bus.topology.dead_letter_queue).await,
        0,
        "permanent errors are not dead-lettered"
    );
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_typst_is_retried_then_succeeds() {
    let bus = Bus::new().await;
    let dir = tempfile::tempdir().unwrap();
    let typst = slow_typst(dir.path(), 0.0);
    std::fs::write(dir.path().join("crash"), "1").unwrap();
    let mut results = bus.results("bulletin.#").await;
    let _worker = bus.spawn_worker(&[("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap())]);
    bus.request(hlj("retried"), "m").await;
    let result = next(&mut results, WAIT).await.expect("a result");
    assert_eq!(result.status(), "succeeded", "{}", result.body);
    assert_eq!(result.body["attempt"], 2);
    assert_eq!(typst_starts(dir.path()), 2);
    assert!(next(&mut results, Duration::from_secs(2)).await.is_none());
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_failing_for_passing_reasons_fails_and_is_dead_lettered() {
    let bus = Bus::new().await;
    let dir = tempfile::tempdir().unwrap();
    let typst = slow_typst(dir.path(), 0.0);
    std::fs::write(dir.path().join("crash"), "100").unwrap();
    let mut results = bus.results("bulletin.#").await;
    let _worker = bus.spawn_worker(&[("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap())]);
    bus.request(hlj("doomed"), "m").await;
    let result = next(&mut results, WAIT).await.expect("a result");
    assert_eq!(result.status(), "failed");
    assert_eq!(result.routing_key, "bulletin.failed.heilongjiang.2019-H1");
    assert_eq!(result.body["error"]["code"], "render_failed");
    assert_eq!(result.body["attempt"], 3, "max_attempts is 3 on the test bus");
    assert_schema("result", &result.body);
    assert_eq!(typst_starts(dir.path()), 3);
    let mut dead = bus.consume(&bus.topology.dead_letter_queue).await;
    let letter = next(&mut dead, Duration::from_secs(10))
        .await
        .expect("the request is dead-lettered");
    assert_eq!(letter.body["job_id"], "doomed");
    for (queue, _) in &bus.topology.retries {
        assert_eq!(bus.depth(queue).await, 0, "{queue} is empty");
    }
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_leaves_it_to_another_with_one_pdf() {
    let bus = Bus::new().await;
    let dir = tempfile::tempdir().unwrap();
    let typst = slow_typst(dir.path(), 3.0);
    let mut results = bus.results("bulletin.#").await;
    let mut doomed = bus.spawn_worker(&[("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap())]);
    bus.request(hlj("survivor"), "m").await;
    wait_for_typst_starts(dir.path(), 1, WAIT, || doomed.log()).await;
    doomed.signal("KILL");
    doomed.wait(Duration::from_secs(10)).expect("killed");
    let _rescuer = bus.spawn_worker(&[]);
    let result = next(&mut results, WAIT).await.expect("a result");
    assert_eq!(result.status(), "succeeded", "{}", result.body);
    assert_eq!(result.job_id(), "survivor");
    assert!(next(&mut results, Duration::from_secs(2)).await.is_none());
    assert_eq!(bus.stored_pdfs().len(), 1);
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_compiles_concurrency_bulletins_at_once_and_holds_the_next_ready() {
    let bus = Bus::new().await;
    let dir = tempfile::tempdir().unwrap();
    let typst = slow_typst(dir.path(), 1.5);
    let mut results = bus.results("bulletin.#").await;
    let worker = bus.spawn_worker(&[
        ("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap()),
        ("TRADEBULLETIN__WORKER__CONCURRENCY", "1"),
    ]);
    for n in 0..4 {
        bus.request(
            json!({"job_id": format!("pipe-{n}"), "region": "Jilin", "period": "2020"}),
            &format!("m{n}"),
        )
        .await;
    }
    wait_for_typst_starts(dir.path(), 1, WAIT, || worker.log()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One compile at a time (worker.concurrency = 1), and a second job already taken from the
    // queue, so that it starts the moment the first compile ends: two of four are left.
    assert_eq!(typst_starts(dir.path()), 1, "{}", worker.log());
    assert_eq!(bus.depth(&bus.topology.request_queue).await, 2, "{}", worker.log());
    let received = collect(&mut results, 4, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 4, "{}", worker.log());
    assert!(received.iter().all(|r| r.status() == "succeeded"));
    assert_eq!(typst_starts(dir.path()), 4);
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_jobs_in_flight_finish_and_exits_zero() {
    let bus = Bus::new().await;
    let dir = tempfile::tempdir().unwrap();
    let typst = slow_typst(dir.path(), 2.0);
    let mut results = bus.results("bulletin.#").await;
    let mut worker = bus.spawn_worker(&[("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap())]);
    bus.request(hlj("term-1"), "m1").await;
    bus.request(json!({"job_id": "term-2", "region": "Jilin", "period": "2020"}), "m2")
        .await;
    wait_for_typst_starts(dir.path(), 2, WAIT, || worker.log()).await;
    worker.signal("TERM");
    let status = worker.wait(Duration::from_secs(30)).expect("the worker exits");
    assert!(status.success(), "exit {status:?}: {}", worker.log());
    let received = collect(&mut results, 2, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.status() == "succeeded"));
    assert_eq!(bus.depth(&bus.topology.request_queue).await, 0, "both were acked");
    bus.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_job_publishes_the_stored_pdf_even_if_its_compile_would_fail() {
    let bus = Bus::new().await;
    let dir = tempfile::tempdir().unwrap();
    let typst = slow_typst(dir.path(), 0.0);
    let mut results = bus.results("bulletin.#").await;
    let _worker = bus.spawn_worker(&[("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap())]);
    bus.request(hlj("twice"), "m1").await;
    let first = next(&mut results, WAIT).await.expect("a result");
    assert_eq!(first.status(), "succeeded", "{}", first.body);
    let location = first.body["pdf"]["location"].as_str().unwrap().to_string();
    let path = PathBuf::from(location.strip_prefix("file://").unwrap());
    let stored = std::fs::read(&path).unwrap();
    // The worker looks for the stored PDF while it renders (src/worker.rs tests each order):
    // here the look wins, and a compile that would crash must not matter.
    std::fs::write(dir.path().join("crash"), "1").unwrap();
    bus.request(hlj("twice"), "m2").await;
    let second = next(&mut results, WAIT).await.expect("a second result");
    assert_eq!(second.status(), "succeeded", "{}", second.body);
    assert_eq!(second.body["attempt"], 1, "no retry: {}", second.body);
    assert_eq!(first.body["pdf"], second.body["pdf"]);
    assert_eq!(std::fs::read(&path).unwrap(), stored, "the stored PDF is untouched");
    let pdfs = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(pdfs, 1, "one PDF for the job, no temporary file left");
    bus.cleanup().await;
}

#[test]
fn enqueue_wait_and_subscribe_download_from_the_command_line() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bus = runtime.block_on(Bus::new());
    let _worker = bus.spawn_worker(&[]);
    let downloads = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tradebulletin");
    let subscriber = bus.spawn_subscriber(&["--binding", "bulletin.*.jilin.#"], downloads.path(), &[]);
    let output = std::process::Command::new(bin)
        .args([
            "enqueue",
            "--region",
            "Jilin",
            "--period",
            "2018",
            "--job-id",
            "cli-1",
            "--wait",
            "--timeout",
            "60",
        ])
        .envs(bus.env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "succeeded");
    let failed = std::process::Command::new(bin)
        .args([
            "enqueue",
            "--region",
            "Jilin",
            "--period",
            "2099",
            "--wait",
            "--timeout",
            "60",
        ])
        .envs(bus.env())
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("no_data"));
    let timed_out = std::process::Command::new(bin)
        .args([
            "enqueue",
            "--region",
            "Jilin",
            "--period",
            "2018",
            "--wait",
            "--timeout",
            "1",
        ])
        .envs(bus.env())
        .env("TRADEBULLETIN__AMQP__REQUEST_QUEUE", format!("{}.nobody", bus.prefix))
        .output()
        .unwrap();
    assert_eq!(timed_out.status.code(), Some(2));

    let listened = subscriber.wait_with_output().unwrap();
    assert!(listened.status.success());
    let line: serde_json::Value = serde_json::from_slice(&listened.stdout).unwrap();
    assert_eq!(line["job_id"], "cli-1");
    let pdf = std::fs::read(downloads.path().join("cli-1.pdf")).unwrap();
    assert_eq!(line["pdf"]["sha256"], sha256_hex(&pdf));
    assert!(squeeze(&crate::helpers::pdf_bytes_text(&pdf)).contains("Jilin"));
    runtime.block_on(bus.cleanup());
}

#[test]
#[should_panic(expected = "result schema rejects")]
fn the_result_schema_rejects_a_result_without_its_pdf() {
    let body = json!({"job_id": "x", "status": "succeeded", "region": "Jilin", "period": "2019", "language": "en",
        "summary": {}, "finished_at": "2019-07-19T00:00:00Z", "attempt": 1});
    assert_schema("result", &body);
}
