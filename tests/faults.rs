//! Proof under faults: 500 jobs through two workers while a worker is killed with SIGKILL every
//! few seconds and restarted, the broker is restarted once, typst crashes or hangs on some
//! jobs, and the storage refuses writes for a while. At the end every job has its result, each
//! PDF is stored once, repeated results agree, the queues are empty, and the dead-letter queue
//! holds exactly the jobs made to fail for good.
//!
//! A test binary of its own (it restarts RabbitMQ). `.ci/run` runs it three times in a row.

#[path = "it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::BasicAckOptions;
use serde_json::json;

const JOBS: usize = 500;
/// Jobs for this region crash typst every time: they must fail for good and be dead-lettered.
const DOOMED_REGION: &str = "Qinghai";
const DOOMED: usize = 5;

/// A stand-in typst: always crashes for the doomed region; crashes on the first compile of
/// one source in seven and hangs (past the timeout) on the first compile of one in thirteen;
/// otherwise runs the real typst. What it did is noted in `dir`.
fn faulty_typst(dir: &Path) -> std::path::PathBuf {
    let real = helpers::which_typst();
    let path = dir.join("typst");
    let script = format!(
        r#"#!/bin/sh
# The source comes on stdin; keep it to look at and to hand on.
src={dir}/source-$$
cat > "$src"
if grep -q -e "{DOOMED_REGION}" -e "青海" "$src"; then touch {dir}/doomed-$$; kill -KILL $$; fi
sum=$(cksum < "$src" | cut -d' ' -f1)
if [ $((sum % 7)) -eq 0 ] && mkdir {dir}/crashed-$sum 2>/dev/null; then kill -KILL $$; fi
if [ $((sum % 13)) -eq 0 ] && mkdir {dir}/hung-$sum 2>/dev/null; then exec sleep 600; fi
sleep 0.3
exec {real} "$@" < "$src"
"#,
        dir = dir.display(),
        real = real.display(),
    );
    helpers::write_script(&path, &script);
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn no_job_is_lost_under_faults() {
    let bus = helpers::Bus::with(|s| {
        s.amqp.delivery_limit = 20;
        s.worker.max_attempts = 6;
        s.worker.retry_delay_ms = 300;
    })
    .await;
    let results_queue = bus.durable_results().await;
    let scratch = tempfile::tempdir().unwrap();
    let typst = faulty_typst(scratch.path());
    let env = [
        ("TRADEBULLETIN__RENDER__TYPST", typst.to_str().unwrap()),
        ("TRADEBULLETIN__RENDER__TIMEOUT_SECS", "2"),
        ("TRADEBULLETIN__WORKER__SHUTDOWN_GRACE_SECS", "5"),
    ];
    let mut workers = vec![bus.spawn_worker(&env), bus.spawn_worker(&env)];

    // The jobs: provinces and years of the shipped dataset, both languages, and the doomed.
    let regions = [
        "Jilin",
        "Hebei",
        "Beijing",
        "Guangdong",
        "Tibet",
        "Xinjiang",
        "Henan",
        "Yunnan",
        "Gansu",
        "Hainan",
    ];
    let mut expected_fail = HashSet::new();
    let mut sent = Vec::new();
    for i in 0..JOBS {
        let job_id = format!("fault-{i}");
        let (region, period) = if i.is_multiple_of(JOBS / DOOMED) {
            expected_fail.insert(job_id.clone());
            (DOOMED_REGION, "2020".to_string())
        } else {
            (
                regions[i % regions.len()],
                format!("{}", 2017 + (i / regions.len()) % 8),
            )
        };
        let language = if i.is_multiple_of(3) { "zh" } else { "en" };
        bus.request(
            json!({"job_id": job_id, "region": region, "period": period, "language": language}),
            &job_id,
        )
        .await;
        sent.push(job_id);
    }

    // The faults, while the jobs flow.
    let started = Instant::now();
    let storage = bus.storage.path().to_path_buf();
    let mut broker_restarted = false;
    let mut storage_refused = false;
    let mut kills = 0;
    let deadline = started + Duration::from_secs(300);
    // A worker is killed every two seconds while requests wait, and at least six times.
    while (kills < 6 || bus.depth(&bus.topology.request_queue).await > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = kills % workers.len();
        workers[victim].signal("KILL");
        workers[victim].wait(Duration::from_secs(10));
        workers[victim] = bus.spawn_worker(&env);
        kills += 1;
        if kills == 1 && !storage_refused {
            // Storage refuses writes: its directory becomes a plain file for four seconds.
            let aside = storage.with_extension("aside");
            std::fs::rename(&storage, &aside).unwrap();
            std::fs::write(&storage, b"not a directory").unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
            std::fs::remove_file(&storage).unwrap();
            std::fs::rename(&aside, &storage).unwrap();
            storage_refused = true;
        }
        if kills == 2 && !broker_restarted {
            helpers::rabbitmqctl(&["stop_app"]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            helpers::rabbitmqctl(&["start_app"]);
            helpers::rabbitmqctl(&["await_startup"]);
            broker_restarted = true;
        }
    }
    assert!(broker_restarted && storage_refused, "the faults happened");

    // Collect every result until each job has one.
    let (_connection, mut consumer) = bus.fresh_consumer(&results_queue).await;
    let mut results: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    // Until every job has a result (or a minute passes with none), then a few seconds more, so
    // that late duplicates count in the checks below too.
    for (wait, until_all) in [(Duration::from_secs(60), true), (Duration::from_secs(3), false)] {
        while !(until_all && results.len() >= JOBS) && Instant::now() < deadline {
            let Ok(Some(Ok(delivery))) = tokio::time::timeout(wait, consumer.next()).await else {
                break;
            };
            let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
            let job_id = body["job_id"].as_str().unwrap().to_string();
            results.entry(job_id).or_default().push(body);
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    }

    let lost: Vec<&String> = sent.iter().filter(|id| !results.contains_key(*id)).collect();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for body in results.values().flatten() {
        let key = format!("{} {}", body["status"], body["error"]["code"]);
        *statuses.entry(key).or_default() += 1;
    }
    println!("faults: results by status and error code: {statuses:?}");
    let mut succeeded = 0;
    let mut failed_as_intended = 0;
    for (job_id, bodies) in &results {
        let statuses: HashSet<&str> = bodies.iter().map(|b| b["status"].as_str().unwrap()).collect();
        if expected_fail.contains(job_id) {
            assert_eq!(statuses, HashSet::from(["failed"]), "{job_id}: {bodies:?}");
            assert_eq!(bodies[0]["error"]["code"], "render_failed");
            failed_as_intended += 1;
        } else {
            assert!(statuses.contains("succeeded"), "{job_id} never succeeded: {bodies:?}");
            let pdfs: HashSet<String> = bodies
                .iter()
                .filter(|b| b["status"] == "succeeded")
                .map(|b| format!("{} {}", b["pdf"]["location"], b["pdf"]["sha256"]))
                .collect();
            assert_eq!(pdfs.len(), 1, "{job_id}: its results disagree: {pdfs:?}");
            succeeded += 1;
        }
    }
    // Each job's PDF exists exactly once, and matches its result.
    let stored = bus.stored_pdfs();
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for path in &stored {
        *per_job
            .entry(path.file_stem().unwrap().to_string_lossy().to_string())
            .or_default() += 1;
    }
    let stored_twice = per_job.values().filter(|n| **n > 1).count();
    for (job_id, bodies) in results.iter().filter(|(id, _)| !expected_fail.contains(*id)) {
        let body = bodies.iter().find(|b| b["status"] == "succeeded").unwrap();
        let path = body["pdf"]["location"]
            .as_str()
            .unwrap()
            .strip_prefix("file://")
            .unwrap();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{job_id}: {path}: {e}"));
        assert_eq!(
            body["pdf"]["sha256"],
            tradebulletin::storage::sha256_hex(&bytes),
            "{job_id}"
        );
    }
    println!(
        "faults: sent {JOBS}, succeeded {succeeded}, failed as intended {failed_as_intended}, lost {}, \
         stored twice {stored_twice}; {kills} workers killed, broker restarted once, storage refused writes once, \
         typst crashed {} and hung {} times, in {:.0} s",
        lost.len(),
        count(scratch.path(), "crashed-") + count(scratch.path(), "doomed-"),
        count(scratch.path(), "hung-"),
        started.elapsed().as_secs_f64()
    );
    let mut depths = vec![(
        bus.topology.request_queue.clone(),
        bus.depth(&bus.topology.request_queue).await,
    )];
    for (queue, _) in &bus.topology.retries {
        depths.push((queue.clone(), bus.depth(queue).await));
    }
    depths.push((
        bus.topology.dead_letter_queue.clone(),
        bus.depth(&bus.topology.dead_letter_queue).await,
    ));
    println!("faults: queue depths at the end: {depths:?}");
    assert!(lost.is_empty(), "lost jobs: {lost:?}");
    assert_eq!(stored_twice, 0);
    assert_eq!(stored.len(), JOBS - DOOMED, "one PDF per succeeded job");
    assert_eq!(failed_as_intended, DOOMED);
    assert_eq!(
        bus.depth(&bus.topology.request_queue).await,
        0,
        "the request queue is empty"
    );
    for (queue, _) in &bus.topology.retries {
        assert_eq!(bus.depth(queue).await, 0, "{queue} is empty");
    }
    // The dead letters are exactly the doomed jobs. One may be there twice: a worker killed
    // after a retry copy was confirmed but before the delivery was acknowledged leaves two
    // copies of the job, and each fails for good (at least once, as the broker delivers).
    let dead = bus.depth(&bus.topology.dead_letter_queue).await as usize;
    let (_dead_connection, mut dead_consumer) = bus.fresh_consumer(&bus.topology.dead_letter_queue).await;
    let mut dead_jobs = HashSet::new();
    for _ in 0..dead {
        let delivery = tokio::time::timeout(Duration::from_secs(10), dead_consumer.next())
            .await
            .expect("a dead letter within 10 s")
            .unwrap()
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        dead_jobs.insert(body["job_id"].as_str().unwrap().to_string());
    }
    println!("faults: {dead} dead letters of {} jobs", dead_jobs.len());
    assert_eq!(dead_jobs, expected_fail, "exactly the doomed are dead letters");
    assert!(
        dead < DOOMED + kills,
        "{dead} dead letters: more copies than kills explain"
    );
    drop(workers);
    bus.cleanup().await;
}

fn count(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}
