//! The whole service against the limit of its design: bulletins per second and latency from
//! publish to result through the real RabbitMQ, worker process and typst, side by side with
//! the typst CLI alone compiling the same bulletins' sources (from `render --typst-out`) with
//! the same flags and fonts at the same concurrency. The two alternate, round after round, and
//! the table gives medians, so a noisy machine does not favour either. It also reads the
//! worker's resident memory, idle and at its peak.
//!
//! Run with `make bench` (or `cargo bench --bench service`) after `scripts/setup`. It prints a
//! table and writes `BENCHMARKS.md`. Knobs: `TRADEBULLETIN_BENCH_JOBS` (jobs per batch,
//! default 72), `TRADEBULLETIN_BENCH_ROUNDS` (default 10), `TRADEBULLETIN_BENCH_CONCURRENCY`
//! (default `1,2`), `TRADEBULLETIN_BENCH_LANGUAGES` (default `en,zh`),
//! `TRADEBULLETIN_BENCH_STORAGE` (`file`, the default, or `s3` for Garage on this machine),
//! `TRADEBULLETIN_BENCH_OUT` (default `BENCHMARKS.md`, `-` for none).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tradebulletin::broker::{self, Topology};
use tradebulletin::narrative::Language;
use tradebulletin::region::Region;
use tradebulletin::settings::Settings;
use tradebulletin::summary::summarise;
use tradebulletin::typst::{Typst, TypstOptions};

/// The PDFs' creation time, the same for the service and for typst alone.
const SOURCE_DATE_EPOCH: i64 = 1_563_494_400; // 2019-07-19

/// One bulletin to make: a region and period of the shipped dataset, in one language.
#[derive(Debug, Clone)]
struct Job {
    region: String,
    period: String,
}

/// What one batch of jobs measured.
#[derive(Debug, Clone)]
struct Batch {
    wall: Duration,
    latencies: Vec<Duration>,
    /// The worker's stage times in this batch (seconds summed over its jobs), from /metrics.
    stages: HashMap<String, f64>,
}

impl Batch {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Every batch of one kind (typst alone or the service) for one language and concurrency.
#[derive(Debug, Default)]
struct Series {
    throughputs: Vec<f64>,
    /// Each batch's median latency, in milliseconds, round by round.
    medians: Vec<f64>,
    latencies: Vec<Duration>,
    stages: HashMap<String, f64>,
}

impl Series {
    fn add(&mut self, batch: Batch) {
        self.throughputs.push(batch.throughput());
        let latencies: Vec<f64> = batch.latencies.iter().copied().map(ms).collect();
        self.medians.push(median_f64(&latencies));
        self.latencies.extend(batch.latencies);
        for (stage, seconds) in batch.stages {
            *self.stages.entry(stage).or_default() += seconds;
        }
    }

    fn throughput(&self) -> f64 {
        median_f64(&self.throughputs)
    }

    /// The mean time of a worker stage per job, in milliseconds.
    fn stage_ms(&self, stage: &str) -> f64 {
        self.stages.get(stage).copied().unwrap_or_default() * 1e3 / self.latencies.len() as f64
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// CPU time of a process and of its children it has waited for, in milliseconds, from
/// /proc/PID/stat (utime + stime, cutime + cstime).
fn cpu_ms(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect())
        .unwrap_or_default();
    // Fields 14-17 of the man page, counted from the state (field 3) here.
    let tick_ms = 1000.0 / 100.0;
    let at = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0) * tick_ms;
    (at(14) + at(15), at(16) + at(17))
}

/// The process whose command name is `comm`, for its CPU time: the broker (RabbitMQ's Erlang
/// VM, `beam.smp`) or the S3 store (`garage`).
fn pid_of(comm: &str) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (name.trim() == comm).then(|| entry.file_name().to_string_lossy().into_owned())
    })
}

/// CPU time spent by each part of the system during a batch.
struct CpuMeter {
    worker: Option<String>,
    broker: Option<String>,
    store: Option<String>,
    start: [f64; 5],
}

impl CpuMeter {
    fn read(&self) -> [f64; 5] {
        let (worker_own, worker_children) = self.worker.as_deref().map_or((0.0, 0.0), cpu_ms);
        let (bench_own, bench_children) = cpu_ms("self");
        let own = |pid: &Option<String>| pid.as_deref().map_or(0.0, |pid| cpu_ms(pid).0);
        [
            worker_own,
            worker_children + bench_children,
            own(&self.broker),
            bench_own,
            own(&self.store),
        ]
    }

    fn start(worker: Option<String>) -> CpuMeter {
        let mut meter = CpuMeter {
            worker,
            broker: pid_of("beam.smp"),
            store: pid_of("garage"),
            start: [0.0; 5],
        };
        meter.start = meter.read();
        meter
    }

    /// Seconds of CPU of the worker, typst (children), the broker, the client and the S3
    /// store, named as stages are.
    fn stop(self) -> HashMap<String, f64> {
        let end = self.read();
        ["cpu:worker", "cpu:typst", "cpu:broker", "cpu:client", "cpu:store"]
            .iter()
            .zip(end.iter().zip(self.start))
            .map(|(name, (end, start))| (name.to_string(), (end - start) / 1e3))
            .collect()
    }
}

fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The first and third quartiles (nearest rank): the middle half of the rounds.
fn quartiles(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.75))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

/// Regions and periods of the shipped dataset that make a bulletin, in a stable order.
fn distinct_jobs() -> Vec<Job> {
    let facts = tradebulletin::store::builtin();
    let candidates: BTreeSet<(String, String)> = facts
        .facts()
        .filter(|f| !f.region.is_national())
        .map(|f| (f.region.name_en().to_string(), f.period.to_string()))
        .collect();
    candidates
        .into_iter()
        .filter(|(region, period)| {
            let region = Region::parse(region).unwrap();
            let period = tradebulletin::period::Period::parse(period).unwrap();
            summarise(&facts, region, period).is_ok()
        })
        .map(|(region, period)| Job { region, period })
        .collect()
}

/// Writes each job's Typst source with `render --typst-out`, as a user would get it.
async fn write_sources(exe: &Path, jobs: &[Job], language: Language, dir: &Path) -> Vec<PathBuf> {
    let mut sources = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let source = dir.join(format!("{}-{index}.typ", language.code()));
        let status = Command::new(exe)
            .args(["render", "--region", &job.region, "--period", &job.period, "--lang"])
            .arg(language.code())
            .arg("--out")
            .arg(dir.join("render.pdf"))
            .arg("--typst-out")
            .arg(&source)
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
            .stdout(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "render {job:?} failed");
        sources.push(source);
    }
    sources
}

/// The typst CLI alone: `concurrency` compiles at a time over `sources`, with the flags the
/// worker gives typst for each source (`Typst::compile_args`: fonts, root, creation time).
async fn typst_alone(typst: &Typst, sources: &[PathBuf], language: Language, concurrency: usize) -> Batch {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let cpu = CpuMeter::start(None);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..concurrency {
        let (next, latencies, sources) = (next.clone(), latencies.clone(), sources.to_vec());
        let typst = typst.clone();
        tasks.push(tokio::spawn(async move {
            let root = sources[0].parent().unwrap().to_path_buf();
            let out = root.join(format!("out-{lane}.pdf"));
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(source) = sources.get(index) else { break };
                let text = std::fs::read_to_string(source).unwrap();
                let compile_started = Instant::now();
                let status = Command::new(&typst.options().binary)
                    .args(typst.compile_args(&root, &text, language, SOURCE_DATE_EPOCH))
                    .arg(source)
                    .arg(&out)
                    .current_dir(&root)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                    .unwrap();
                assert!(status.success(), "typst failed on {}", source.display());
                latencies.lock().await.push(compile_started.elapsed());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let wall = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    Batch {
        wall,
        latencies,
        stages: cpu.stop(),
    }
}

/// The fields of a result the benchmark reads.
#[derive(serde::Deserialize)]
struct Outcome<'a> {
    job_id: &'a str,
    status: &'a str,
}

/// A worker process with its own queue and exchanges.
struct Worker {
    child: Child,
    settings: Settings,
    http: String,
}

impl Worker {
    async fn start(exe: &Path, concurrency: usize, storage: &[(String, String)]) -> Worker {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = [
            ("TRADEBULLETIN__AMQP__REQUEST_QUEUE", format!("bench-{tag}.requests")),
            ("TRADEBULLETIN__AMQP__RESULTS_EXCHANGE", format!("bench-{tag}.results")),
            ("TRADEBULLETIN__AMQP__DEAD_LETTER_EXCHANGE", format!("bench-{tag}.dlx")),
            ("TRADEBULLETIN__AMQP__DEAD_LETTER_QUEUE", format!("bench-{tag}.dead")),
            ("TRADEBULLETIN__WORKER__CONCURRENCY", concurrency.to_string()),
            ("TRADEBULLETIN__HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("TRADEBULLETIN__LOG__LEVEL", "warn".to_string()),
            ("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string()),
        ];
        let mut command = Command::new(exe);
        command.arg("worker").stdout(Stdio::null()).kill_on_drop(true);
        for (key, value) in &env {
            command.env(key, value);
        }
        command.envs(storage.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().unwrap();
        let mut settings = Settings::load(None).unwrap();
        settings.amqp.request_queue = env[0].1.clone();
        settings.amqp.results_exchange = env[1].1.clone();
        settings.amqp.dead_letter_exchange = env[2].1.clone();
        settings.amqp.dead_letter_queue = env[3].1.clone();
        settings.worker.concurrency = concurrency;
        let worker = Worker {
            child,
            settings,
            http: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/readyz", worker.http))
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the worker did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worker
    }

    /// The worker's stage histograms' sums (seconds), by stage.
    async fn stage_sums(&self) -> HashMap<String, f64> {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|line| line.strip_prefix("tradebulletin_stage_seconds_sum{stage=\""))
            .filter_map(|rest| {
                let (stage, value) = rest.split_once("\"}")?;
                Some((stage.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Resident memory now and at its peak, from /proc, in MiB.
    fn memory(&self) -> (f64, f64) {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap()
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `in_flight` requests published at a time: each result received lets the next one be
    /// published. Latency runs from before the publish to the result's arrival. With
    /// `in_flight` = the worker's concurrency it measures latency without queueing; with all
    /// the jobs at once, throughput with the queue never empty.
    async fn run(&self, jobs: &[Job], language: Language, in_flight: usize, label: &str) -> Batch {
        let amqp = &self.settings.amqp;
        let connection = broker::connect_with_settings(amqp, "tradebulletin bench")
            .await
            .unwrap();
        let channel = broker::confirm_channel(&connection).await.unwrap();
        let topology = Topology::new(amqp, &self.settings.worker);
        let results = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                results.name().clone(),
                amqp.results_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        // Without acks: the measuring client should cost the broker as little as it can.
        let mut consumer = channel
            .basic_consume(
                results.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let timeout = Duration::from_secs(amqp.publish_timeout_secs);
        // When each request was published, by job id. Each publish is a task of its own, so
        // that waiting for the broker's confirm never delays reading a result that has arrived.
        let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
        let publish = |index: usize| {
            let job = &jobs[index];
            let id = format!("{label}-{index}");
            let body = serde_json::json!({
                "job_id": id,
                "region": job.region,
                "period": job.period,
                "language": language.code(),
            });
            let body = serde_json::to_vec(&body).unwrap();
            let (channel, queue, sent) = (channel.clone(), topology.request_queue.clone(), sent.clone());
            tokio::spawn(async move {
                sent.lock().unwrap().insert(id, Instant::now());
                let properties = broker::json_properties();
                broker::publish(&channel, "", &queue, &body, properties, true, timeout)
                    .await
                    .unwrap();
            })
        };
        let stages_before = self.stage_sums().await;
        let cpu = CpuMeter::start(self.child.id().map(|pid| pid.to_string()));
        let started = Instant::now();
        let mut publishing: Vec<_> = (0..in_flight.min(jobs.len())).map(publish).collect();
        let mut next = publishing.len();
        let mut latencies = Vec::new();
        while latencies.len() < jobs.len() {
            let delivery = tokio::time::timeout(Duration::from_secs(120), consumer.next())
                .await
                .expect("a result within two minutes")
                .unwrap()
                .unwrap();
            let arrived = Instant::now();
            let result: Outcome = serde_json::from_slice(&delivery.data)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&delivery.data)));
            assert_eq!(
                result.status,
                "succeeded",
                "{}",
                String::from_utf8_lossy(&delivery.data)
            );
            let Some(published) = sent.lock().unwrap().remove(result.job_id) else {
                continue;
            };
            latencies.push(arrived - published);
            if next < jobs.len() {
                publishing.push(publish(next));
                next += 1;
            }
        }
        for task in publishing {
            task.await.unwrap();
        }
        let wall = started.elapsed();
        let cpu = cpu.stop();
        let _ = connection.close(200, "done".into()).await;
        let mut stages = self.stage_sums().await;
        for (stage, seconds) in &mut stages {
            *seconds -= stages_before.get(stage).copied().unwrap_or_default();
        }
        stages.extend(cpu);
        Batch {
            wall,
            latencies,
            stages,
        }
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap();
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        // The bench's queues and exchanges go with it.
        let amqp = &self.settings.amqp;
        let connection = broker::connect_with_settings(amqp, "tradebulletin bench cleanup")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        Topology::new(amqp, &self.settings.worker).delete(&channel).await;
        let _ = connection.close(200, "done".into()).await;
    }
}

/// The measured figures beside the service's targets (issue 8).
#[derive(Debug, Default)]
struct Targets {
    ratio: Vec<String>,
    latency: Vec<String>,
    chinese: Vec<String>,
    memory: Vec<String>,
}

impl Targets {
    fn render(&self) -> String {
        [
            ("throughput at least 0.90 of typst alone's", &self.ratio),
            ("median latency at most typst's median + 5 ms", &self.latency),
            ("a Chinese bulletin at most 1.5 times an English one", &self.chinese),
            ("idle resident memory at most 30 MiB", &self.memory),
        ]
        .iter()
        .filter(|(_, figures)| !figures.is_empty())
        .map(|(target, figures)| format!("- {target}: {}\n", figures.join("; ")))
        .collect()
    }
}

fn verdict(met: bool) -> &'static str {
    if met { " (met)" } else { " (missed)" }
}

/// Where the workers store their PDFs (`TRADEBULLETIN_BENCH_STORAGE`): `file`, a temporary
/// directory, or `s3`, Garage on this machine (`scripts/garage`, built by `scripts/setup test`)
/// under a prefix of this run's own.
struct PdfStorage {
    kind: String,
    env: Vec<(String, String)>,
    /// The S3 bucket and prefix to empty at the end.
    s3: Option<(object_store::aws::AmazonS3, String)>,
}

impl PdfStorage {
    fn new(kind: &str, dir: &Path) -> PdfStorage {
        match kind {
            "file" => PdfStorage {
                kind: "local files".into(),
                env: vec![(
                    "TRADEBULLETIN__STORAGE__URL".into(),
                    format!("file://{}", dir.display()),
                )],
                s3: None,
            },
            "s3" => {
                let output = std::process::Command::new("scripts/garage")
                    .output()
                    .expect("scripts/garage runs");
                let printed = String::from_utf8_lossy(&output.stdout);
                assert!(
                    output.status.success(),
                    "TRADEBULLETIN_BENCH_STORAGE=s3 needs Garage (scripts/setup test): {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let field = |name: &str| {
                    printed
                        .split_whitespace()
                        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or_else(|| panic!("scripts/garage printed no {name}: {printed}"))
                        .to_string()
                };
                let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
                let (bucket, endpoint, region) = (field("bucket"), field("endpoint"), field("region"));
                let (key_id, secret) = (field("access_key_id"), field("secret_access_key"));
                let store = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_endpoint(&endpoint)
                    .with_allow_http(true)
                    .with_region(&region)
                    .with_access_key_id(&key_id)
                    .with_secret_access_key(&secret)
                    .build()
                    .unwrap();
                PdfStorage {
                    kind: format!("S3 (Garage on this machine, {endpoint})"),
                    env: vec![
                        ("TRADEBULLETIN__STORAGE__URL".into(), format!("s3://{bucket}/{prefix}")),
                        ("TRADEBULLETIN__STORAGE__ENDPOINT".into(), endpoint),
                        ("TRADEBULLETIN__STORAGE__REGION".into(), region),
                        ("TRADEBULLETIN__STORAGE__PATH_STYLE".into(), "true".into()),
                        ("AWS_ACCESS_KEY_ID".into(), key_id),
                        ("AWS_SECRET_ACCESS_KEY".into(), secret),
                    ],
                    s3: Some((store, prefix)),
                }
            }
            other => panic!("TRADEBULLETIN_BENCH_STORAGE is file or s3, not {other}"),
        }
    }

    /// Deletes the run's PDFs from S3 (a temporary directory goes by itself).
    async fn clean(&self) {
        use object_store::ObjectStore;
        let Some((store, prefix)) = &self.s3 else { return };
        let prefix = object_store::path::Path::from(prefix.as_str());
        let listed = futures_util::TryStreamExt::map_ok(store.list(Some(&prefix)), |meta| meta.location);
        let mut deleted = store.delete_stream(Box::pin(listed));
        while let Some(result) = deleted.next().await {
            result.unwrap();
        }
    }
}

fn version(command: &str, args: &[&str]) -> String {
    std::process::Command::new(command)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The commit measured, `-dirty` when tracked files other than this page differ from it.
fn commit() -> String {
    let head = version("git", &["rev-parse", "--short", "HEAD"]);
    let changed = std::process::Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)BENCHMARKS.md",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if changed { format!("{head}-dirty") } else { head }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "unknown".into(), |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0));
    format!("{cores} cores ({model}), {memory} memory")
}

#[tokio::main]
async fn main() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_tradebulletin"));
    let settings = Settings::load(None).unwrap();
    let render = &settings.render;
    let typst = Typst::new(TypstOptions {
        binary: render.typst.clone().into(),
        latin_fonts: render.latin_fonts.clone().into(),
        cjk_fonts: render.cjk_fonts.clone().into(),
        cjk_fallback_fonts: render.cjk_fallback_fonts.clone().into(),
        timeout: Duration::from_secs(render.timeout_secs),
        max_concurrent: 2,
    })
    .expect("scripts/setup has installed typst and the fonts");
    // Enough jobs that the batch's two ends (the first request's trip to the worker, the last
    // result's back), which typst alone has no part of, weigh little against its steady
    // state: with 24 they cost the ratio about 0.02.
    let per_batch = env_number("TRADEBULLETIN_BENCH_JOBS", 72);
    let rounds = env_number("TRADEBULLETIN_BENCH_ROUNDS", 10);
    let concurrencies: Vec<usize> = env_list("TRADEBULLETIN_BENCH_CONCURRENCY", "1,2")
        .iter()
        .map(|c| c.parse().expect("concurrency is a number"))
        .collect();
    let languages: Vec<Language> = env_list("TRADEBULLETIN_BENCH_LANGUAGES", "en,zh")
        .iter()
        .map(|l| Language::parse(l).expect("a language: en or zh"))
        .collect();

    let distinct = distinct_jobs();
    let jobs: Vec<Job> = distinct.iter().cycle().take(per_batch).cloned().collect();
    let work = tempfile::tempdir().unwrap();
    let mut sources = HashMap::new();
    for &language in &languages {
        let dir = work.path().join(language.code());
        std::fs::create_dir_all(&dir).unwrap();
        sources.insert(language, write_sources(&exe, &jobs, language, &dir).await);
    }
    println!(
        "{} jobs per batch ({} distinct bulletins of the shipped dataset), {rounds} rounds, typst alone and the service alternating",
        jobs.len(),
        distinct.len().min(jobs.len())
    );

    let storage_kind = std::env::var("TRADEBULLETIN_BENCH_STORAGE").unwrap_or_else(|_| "file".into());
    let storage = PdfStorage::new(&storage_kind, &work.path().join("bulletins"));
    let mut workers = Vec::new();
    for &concurrency in &concurrencies {
        workers.push((concurrency, Worker::start(&exe, concurrency, &storage.env).await));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle: Vec<(usize, f64)> = workers.iter().map(|(c, w)| (*c, w.memory().0)).collect();

    let mut alone: HashMap<(Language, usize), Series> = HashMap::new();
    let mut flooded: HashMap<(Language, usize), Series> = HashMap::new();
    let mut service: HashMap<(Language, usize), Series> = HashMap::new();
    for round in 0..rounds {
        for &language in &languages {
            for (concurrency, worker) in &workers {
                let key = (language, *concurrency);
                let label = format!("bench-r{round}-{}-c{concurrency}", language.code());
                // Alternate which goes first, so neither always gets the warmer machine.
                let typst_first = round % 2 == 0;
                if typst_first {
                    let batch = typst_alone(&typst, &sources[&language], language, *concurrency).await;
                    alone.entry(key).or_default().add(batch);
                }
                let batch = worker.run(&jobs, language, jobs.len(), &format!("{label}-all")).await;
                flooded.entry(key).or_default().add(batch);
                let batch = worker.run(&jobs, language, *concurrency, &label).await;
                service.entry(key).or_default().add(batch);
                if !typst_first {
                    let batch = typst_alone(&typst, &sources[&language], language, *concurrency).await;
                    alone.entry(key).or_default().add(batch);
                }
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory: Vec<(usize, f64, f64, f64)> = workers
        .iter()
        .map(|(c, w)| {
            let (after, peak) = w.memory();
            let before = idle.iter().find(|(ic, _)| ic == c).map_or(0.0, |(_, m)| *m);
            (*c, before, after, peak)
        })
        .collect();
    for (_, worker) in workers {
        worker.stop().await;
    }
    storage.clean().await;

    let mut table = String::new();
    writeln!(
        table,
        "| language | concurrency | typst alone (bulletins/s) | service (bulletins/s) | ratio (middle half of rounds) | typst p50 / p90 / p99 (ms) | service p50 / p90 / p99 (ms) | p50 gap (ms) (middle half of rounds) |"
    )
    .unwrap();
    writeln!(table, "|---|---|---|---|---|---|---|---|").unwrap();
    let mut targets = Targets::default();
    for &language in &languages {
        for &concurrency in &concurrencies {
            let key = (language, concurrency);
            let (a, f, s) = (&alone[&key], &flooded[&key], &service[&key]);
            let ratios: Vec<f64> = a.throughputs.iter().zip(&f.throughputs).map(|(a, f)| f / a).collect();
            let gaps: Vec<f64> = a.medians.iter().zip(&s.medians).map(|(a, s)| s - a).collect();
            let (ratio, (ratio_q1, ratio_q3)) = (median_f64(&ratios), quartiles(&ratios));
            let gap = ms(s.percentile(0.5)) - ms(a.percentile(0.5));
            let (gap_q1, gap_q3) = quartiles(&gaps);
            let case = format!("{} at concurrency {concurrency}", language.code());
            targets
                .ratio
                .push(format!("{case}: {ratio:.2}{}", verdict(ratio >= 0.9)));
            targets
                .latency
                .push(format!("{case}: {gap:+.1} ms{}", verdict(gap <= 5.0)));
            writeln!(
                table,
                "| {} | {concurrency} | {:.1} | {:.1} | {ratio:.2} ({ratio_q1:.2}-{ratio_q3:.2}) | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {gap:+.1} ({gap_q1:+.1} to {gap_q3:+.1}) |",
                language.code(),
                a.throughput(),
                f.throughput(),
                ms(a.percentile(0.5)),
                ms(a.percentile(0.9)),
                ms(a.percentile(0.99)),
                ms(s.percentile(0.5)),
                ms(s.percentile(0.9)),
                ms(s.percentile(0.99)),
            )
            .unwrap();
        }
    }
    let mut profile = String::new();
    writeln!(
        profile,
        "| language | concurrency | summary | fill template | typst (in the worker) | store | publish result | broker and the rest | end to end (mean) |"
    )
    .unwrap();
    writeln!(profile, "|---|---|---|---|---|---|---|---|---|").unwrap();
    for &language in &languages {
        for &concurrency in &concurrencies {
            let s = &service[&(language, concurrency)];
            let mean = ms(s.latencies.iter().sum::<Duration>()) / s.latencies.len() as f64;
            let (summary, render, compile) = (s.stage_ms("summary"), s.stage_ms("render"), s.stage_ms("compile"));
            let (store, publish) = (s.stage_ms("store"), s.stage_ms("publish"));
            writeln!(
                profile,
                "| {} | {concurrency} | {summary:.2} | {:.2} | {compile:.1} | {store:.2} | {publish:.2} | {:.1} | {mean:.1} |",
                language.code(),
                render - compile,
                mean - summary - render - store - publish,
            )
            .unwrap();
        }
    }
    writeln!(
        profile,
        "\nCPU milliseconds per job (from /proc; typst alone for comparison), with all of a batch's requests published at once:\n\n\
         | language | concurrency | typst alone | typst in the service | worker | broker | client | S3 store |\n|---|---|---|---|---|---|---|---|"
    )
    .unwrap();
    for &language in &languages {
        for &concurrency in &concurrencies {
            let (a, f) = (&alone[&(language, concurrency)], &flooded[&(language, concurrency)]);
            writeln!(
                profile,
                "| {} | {concurrency} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
                language.code(),
                a.stage_ms("cpu:typst"),
                f.stage_ms("cpu:typst"),
                f.stage_ms("cpu:worker"),
                f.stage_ms("cpu:broker"),
                f.stage_ms("cpu:client"),
                match storage.s3 {
                    Some(_) => format!("{:.2}", f.stage_ms("cpu:store")),
                    None => "-".to_string(),
                },
            )
            .unwrap();
        }
    }
    let mut costs = String::new();
    if let (Some(en), Some(zh)) = (
        languages.iter().find(|l| **l == Language::En),
        languages.iter().find(|l| **l == Language::Zh),
    ) {
        for &concurrency in &concurrencies {
            let (e, z) = (&service[&(*en, concurrency)], &service[&(*zh, concurrency)]);
            let (ef, zf) = (&flooded[&(*en, concurrency)], &flooded[&(*zh, concurrency)]);
            let cost = ms(z.percentile(0.5)) / ms(e.percentile(0.5));
            targets
                .chinese
                .push(format!("concurrency {concurrency}: {cost:.2}{}", verdict(cost <= 1.5)));
            writeln!(
                costs,
                "- concurrency {concurrency}: a Chinese bulletin costs {cost:.2} times an English one end to end (median latency {:.1} vs {:.1} ms; throughput {:.2} vs {:.2} per second)",
                ms(z.percentile(0.5)),
                ms(e.percentile(0.5)),
                zf.throughput(),
                ef.throughput(),
            )
            .unwrap();
        }
    }
    let mut memory_lines = String::new();
    for (concurrency, before, after, peak) in memory {
        targets.memory.push(format!(
            "concurrency {concurrency}: {before:.1} MiB{}",
            verdict(before <= 30.0)
        ));
        writeln!(
            memory_lines,
            "- worker with concurrency {concurrency}: {before:.1} MiB idle before the jobs, {after:.1} MiB idle after them, {peak:.1} MiB at its peak (VmHWM; typst's own processes not included)"
        )
        .unwrap();
    }
    let targets = targets.render();
    println!(
        "\n{table}\nWhere a job's time goes in the service (mean milliseconds per job, from the worker's /metrics):\n\n{profile}\n{costs}\n{memory_lines}\n{targets}"
    );

    let out = std::env::var("TRADEBULLETIN_BENCH_OUT").unwrap_or_else(|_| "BENCHMARKS.md".into());
    if out != "-" {
        let report = format!(
            "# Benchmarks\n\n\
             Written by `make bench` (`cargo bench --bench service`, benches/service.rs); rerun it to refresh this page.\n\n\
             - machine: {}\n- versions: tradebulletin {} ({}), {}, {}, RabbitMQ {}\n\
             - {} jobs per batch, each with a job id of its own (so each is compiled and stored), over {} distinct bulletins of the shipped dataset, {rounds} rounds; in each round typst alone and the service alternate (which goes first alternates too)\n\
             - typst alone: the typst CLI compiling the sources `render --typst-out` writes, with the worker's flags and fonts, `concurrency` compiles at a time\n\
             - service: a worker process with `worker.concurrency` = concurrency, its PDFs stored in {}; throughput with all the batch's requests published at once (from the first publish to the last result); latency from before the publish to the result on the results exchange, with `concurrency` requests in flight (the next published when a result arrives), so that no request waits in the queue\n\
             - throughput: median over rounds of bulletins per second; ratio: median of the rounds' service / typst-alone ratios; latency percentiles over all jobs of all rounds; in brackets, the first and third quartiles of the rounds' own ratios and p50 gaps, which show how much a figure moves from round to round\n\n\
             {table}\n## Where a job's time goes\n\n\
             Mean milliseconds per job, from the worker's stage histograms (`/metrics`); \"typst (in the worker)\" includes writing the job's sources and reading the PDF, \"broker and the rest\" is the end-to-end latency minus the stages: the request's and the result's trips through RabbitMQ.\n\n\
             {profile}\n## Chinese and English\n\n{costs}\n## Memory\n\n{memory_lines}\n## Against the targets of issue 8\n\n{targets}",
            machine(),
            env!("CARGO_PKG_VERSION"),
            commit(),
            version(&settings.render.typst, &["--version"]),
            version("rustc", &["--version"]),
            version("rabbitmqctl", &["version"]),
            jobs.len(),
            distinct.len().min(jobs.len()),
            storage.kind,
        );
        std::fs::write(&out, report).unwrap();
        println!("wrote {out}");
    }
}
