//! The broker restarted while jobs flow: the worker reconnects by itself and every job
//! completes. A test binary of its own, because restarting RabbitMQ would disturb the tests
//! that run in parallel in the main binary; cargo runs test binaries one after another.

#[path = "it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::HashSet;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::BasicAckOptions;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_reconnects_after_a_broker_restart_and_every_job_completes() {
    let bus = helpers::Bus::new().await;
    // A durable results queue of the test's own, which survives the restart.
    let results_queue = bus.durable_results().await;
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
    helpers::wait_for_typst_starts(dir.path(), 2, Duration::from_secs(60), || worker.log()).await;
    helpers::rabbitmqctl(&["stop_app"]);
    assert!(
        helpers::wait_for_status(worker.port, "/readyz", 503, Duration::from_secs(30)),
        "not ready while the broker is down"
    );
    assert_eq!(
        helpers::http_get(worker.port, "/healthz").unwrap().0,
        200,
        "alive all the same"
    );
    helpers::rabbitmqctl(&["start_app"]);
    helpers::rabbitmqctl(&["await_startup"]);
    assert!(
        helpers::wait_for_status(worker.port, "/readyz", 200, Duration::from_secs(60)),
        "ready again: {}",
        worker.log()
    );

    let (_connection, mut consumer) = bus.fresh_consumer(&results_queue).await;
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
    bus.cleanup().await;
}
