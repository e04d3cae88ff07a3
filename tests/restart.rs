//! The broker restarted while jobs flow: the worker reconnects by itself and every job
//! completes. A test binary of its own, because restarting RabbitMQ would disturb the tests
//! that run in parallel in the main binary; cargo runs test binaries one after another.

#[path = "it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_reconnects_after_a_broker_restart_and_every_job_completes() {
    let bus = helpers::Bus::new().await;
    // A durable results queue of the test's own, which survives the restart.
    let results_queue = format!("{}.test-results", bus.prefix);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    bus.channel
        .queue_declare(results_queue.as_str().into(), durable, FieldTable::default())
        .await
        .unwrap();
    bus.channel
        .queue_bind(
            results_queue.as_str().into(),
            bus.topology.results_exchange.as_str().into(),
            "bulletin.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Each compile takes half a second longer, so that jobs are in flight across the restart.
    let dir = tempfile::tempdir().unwrap();
    let typst = helpers::slow_typst(dir.path(), 0.5);
    let worker = bus.spawn_worker(&[("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap())]);
    assert!(
        helpers::wait_for_status(worker.port, "/readyz", 200, Duration::from_secs(30)),
        "{}",
        worker.log()
    );
    let jobs = 12;
    for i in 0..jobs {
        bus.request(
            json!({"job_id": format!("restart-{i}"), "region": "Hebei", "period": format!("{}", 2017 + i % 8)}),
            "m",
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while helpers::typst_starts(dir.path()) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rabbitmqctl(&["stop_app"]);
    assert!(
        helpers::wait_for_status(worker.port, "/readyz", 503, Duration::from_secs(30)),
        "not ready while the broker is down"
    );
    assert_eq!(
        helpers::http_get(worker.port, "/healthz").unwrap().0,
        200,
        "alive all the same"
    );
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    assert!(
        helpers::wait_for_status(worker.port, "/readyz", 200, Duration::from_secs(60)),
        "ready again: {}",
        worker.log()
    );

    let settings = &bus.settings;
    let connection = tradebulletin::broker::connect(&settings.amqp.url, 30, "restart test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            results_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut done = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while done.len() < jobs {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, consumer.next()).await else {
            panic!("only {} of {jobs} jobs completed: {:?}", done.len(), done);
        };
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(body["status"], "succeeded", "{body}");
        done.insert(body["job_id"].as_str().unwrap().to_string());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(done.len(), jobs);
    assert!(helpers::typst_starts(dir.path()) >= jobs, "every job was rendered");
    assert_eq!(bus.stored_pdfs().len(), jobs);
    let _ = channel
        .queue_delete(results_queue.as_str().into(), Default::default())
        .await;
    bus.cleanup().await;
}
