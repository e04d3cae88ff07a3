//! What the integration tests share: running the binary, reading PDFs, building the renderer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tradebulletin::render::Renderer;
use tradebulletin::settings::Settings;
use tradebulletin::typst::{Typst, TypstOptions};

/// Runs the `tradebulletin` binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .args(args)
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .expect("the binary runs")
}

/// Runs the binary and returns its stdout, failing the test if it failed.
pub fn run_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The text of a PDF, as pdftotext gives it (reading order, no layout).
pub fn pdf_text(path: &Path) -> String {
    let output = Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext runs (scripts/setup)");
    assert!(output.status.success(), "pdftotext failed on {}", path.display());
    String::from_utf8(output.stdout).expect("UTF-8 text")
}

/// The text of PDF bytes.
pub fn pdf_bytes_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.pdf");
    std::fs::write(&path, pdf).unwrap();
    pdf_text(&path)
}

/// Collapses runs of white space, so that text broken across lines still matches.
pub fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes a facts CSV with the contract's header and `rows`; returns its path.
pub fn facts_file(dir: &Path, name: &str, rows: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("region,period,partner,flow,product,value,currency\n{rows}"),
    )
    .unwrap();
    path
}

/// The typst runner of the default configuration, with another binary or timeout if given.
pub fn typst(binary: Option<&Path>, timeout: Duration) -> Typst {
    let settings = Settings::load(None).unwrap();
    Typst::new(TypstOptions {
        binary: binary.map_or_else(|| settings.render.typst.clone().into(), Path::to_path_buf),
        latin_fonts: settings.render.latin_fonts.clone().into(),
        cjk_fonts: settings.render.cjk_fonts.clone().into(),
        cjk_fallback_fonts: settings.render.cjk_fallback_fonts.clone().into(),
        timeout,
        max_concurrent: 2,
    })
    .expect("fonts are installed (scripts/setup)")
}

pub fn renderer() -> Renderer {
    Renderer::new(typst(None, Duration::from_secs(60)), "tests".into())
}

/// One test's own broker objects (unique names), a storage directory, and a connection.
pub struct Bus {
    pub prefix: String,
    pub settings: Settings,
    pub topology: tradebulletin::broker::Topology,
    pub storage: tempfile::TempDir,
    /// Kept open for `channel`.
    _connection: lapin::Connection,
    pub channel: lapin::Channel,
}

/// A result as a subscriber sees it.
#[derive(Debug)]
pub struct Received {
    pub routing_key: String,
    pub properties: lapin::BasicProperties,
    pub body: serde_json::Value,
}

impl Received {
    pub fn job_id(&self) -> &str {
        self.body["job_id"].as_str().unwrap_or_default()
    }

    pub fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or_default()
    }
}

impl Bus {
    /// Declares a fresh topology under unique names.
    pub async fn new() -> Bus {
        Bus::with(|_| {}).await
    }

    /// Like `new`, with settings changed by `adjust` before anything is declared.
    pub async fn with(adjust: impl FnOnce(&mut Settings)) -> Bus {
        let prefix = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let storage = tempfile::tempdir().unwrap();
        let mut settings = Settings::load(None).unwrap();
        settings.amqp.request_queue = format!("{prefix}.requests");
        settings.amqp.results_exchange = format!("{prefix}.results");
        settings.amqp.dead_letter_exchange = format!("{prefix}.dlx");
        settings.amqp.dead_letter_queue = format!("{prefix}.dead");
        settings.worker.retry_delay_ms = 200;
        settings.worker.max_attempts = 3;
        settings.storage.url = format!("file://{}", storage.path().display());
        adjust(&mut settings);
        let topology = tradebulletin::broker::Topology::new(&settings.amqp, &settings.worker);
        let connection = tradebulletin::broker::connect(&settings.amqp.url, 30, "tests")
            .await
            .unwrap();
        let channel = tradebulletin::broker::confirm_channel(&connection).await.unwrap();
        topology.declare(&channel).await.unwrap();
        Bus {
            prefix,
            settings,
            topology,
            storage,
            _connection: connection,
            channel,
        }
    }

    /// Starts `subscribe --count 1 --download DIR` with `args` before them, the bus's settings
    /// and `extra` environment, and waits until it has had time to bind its queue.
    pub fn spawn_subscriber(&self, args: &[&str], download: &Path, extra: &[(String, String)]) -> std::process::Child {
        let subscriber = Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
            .arg("subscribe")
            .args(args)
            .args(["--count", "1", "--download"])
            .arg(download)
            .envs(self.env())
            .envs(extra.iter().cloned())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        subscriber
    }

    /// The environment that points a worker process at this bus.
    pub fn env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        vec![
            (
                "TRADEBULLETIN__AMQP__REQUEST_QUEUE".into(),
                s.amqp.request_queue.clone(),
            ),
            (
                "TRADEBULLETIN__AMQP__RESULTS_EXCHANGE".into(),
                s.amqp.results_exchange.clone(),
            ),
            (
                "TRADEBULLETIN__AMQP__DEAD_LETTER_EXCHANGE".into(),
                s.amqp.dead_letter_exchange.clone(),
            ),
            (
                "TRADEBULLETIN__AMQP__DEAD_LETTER_QUEUE".into(),
                s.amqp.dead_letter_queue.clone(),
            ),
            (
                "TRADEBULLETIN__WORKER__RETRY_DELAY_MS".into(),
                s.worker.retry_delay_ms.to_string(),
            ),
            (
                "TRADEBULLETIN__WORKER__MAX_ATTEMPTS".into(),
                s.worker.max_attempts.to_string(),
            ),
            (
                "TRADEBULLETIN__AMQP__DELIVERY_LIMIT".into(),
                s.amqp.delivery_limit.to_string(),
            ),
            ("TRADEBULLETIN__STORAGE__URL".into(), s.storage.url.clone()),
        ]
    }

    /// Starts a worker process on this bus; `extra` adds or overrides environment variables.
    pub fn spawn_worker(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradebulletin"));
        command
            .arg("worker")
            .envs(self.env())
            .env("TRADEBULLETIN__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("TRADEBULLETIN_CONFIG");
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("the worker starts");
        WorkerProcess { child, log, port }
    }

    /// A private queue bound to the results exchange with `binding`.
    pub async fn results(&self, binding: &str) -> lapin::Consumer {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let options = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .channel
            .queue_declare("".into(), options, FieldTable::default())
            .await
            .unwrap();
        let name = queue.name().to_string();
        self.channel
            .queue_bind(
                name.as_str().into(),
                self.topology.results_exchange.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.consume(&name).await
    }

    pub async fn consume(&self, queue: &str) -> lapin::Consumer {
        use lapin::options::BasicConsumeOptions;
        let options = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        self.channel
            .basic_consume(queue.into(), "".into(), options, lapin::types::FieldTable::default())
            .await
            .unwrap()
    }

    /// A durable queue of the test's own, bound to every result: it survives a broker restart.
    #[allow(dead_code)] // for tests/faults.rs and tests/restart.rs, which restart the broker
    pub async fn durable_results(&self) -> String {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        let queue = format!("{}.all-results", self.prefix);
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let results = self.topology.results_exchange.as_str();
        self.channel
            .queue_declare(queue.as_str().into(), durable, Default::default())
            .await
            .unwrap();
        let bind = QueueBindOptions::default();
        self.channel
            .queue_bind(
                queue.as_str().into(),
                results.into(),
                "bulletin.#".into(),
                bind,
                Default::default(),
            )
            .await
            .unwrap();
        queue
    }

    /// Consumes `queue` (manual acks) on a new connection, which a restart has not killed.
    #[allow(dead_code)] // for tests/faults.rs and tests/restart.rs, which restart the broker
    pub async fn fresh_consumer(&self, queue: &str) -> (lapin::Connection, lapin::Consumer) {
        let connection = tradebulletin::broker::connect(&self.settings.amqp.url, 30, "tests")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let options = lapin::options::BasicConsumeOptions::default();
        let consumer = channel
            .basic_consume(queue.into(), "".into(), options, Default::default())
            .await
            .unwrap();
        (connection, consumer)
    }

    /// Publishes raw bytes as a request, with a message id.
    pub async fn publish(&self, body: &[u8], message_id: &str, properties: lapin::BasicProperties) {
        let properties = properties.with_message_id(message_id.into());
        tradebulletin::broker::publish(
            &self.channel,
            "",
            &self.topology.request_queue,
            body,
            properties,
            true,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }

    /// Publishes a request object.
    pub async fn request(&self, body: serde_json::Value, message_id: &str) {
        let properties = tradebulletin::broker::json_properties();
        self.publish(body.to_string().as_bytes(), message_id, properties).await;
    }

    /// How many messages wait in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        use lapin::options::QueueDeclareOptions;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // A connection of its own, which survives a broker restart that killed the bus's.
        let connection = tradebulletin::broker::connect(&self.settings.amqp.url, 30, "depth")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
            .await
            .unwrap();
        let _ = connection.close(200, "".into()).await;
        queue.message_count()
    }

    /// The PDFs stored, as paths.
    pub fn stored_pdfs(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "pdf") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.storage.path(), &mut out);
        out
    }

    /// Deletes this test's queues and exchanges.
    pub async fn cleanup(&self) {
        // A connection of its own: the test's may have died with a broker restart.
        let connection = tradebulletin::broker::connect(&self.settings.amqp.url, 30, "cleanup")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        self.topology.delete(&channel).await;
        let all_results = format!("{}.all-results", self.prefix);
        let _ = channel
            .queue_delete(
                all_results.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
        let _ = connection.close(200, "".into()).await;
    }
}

/// Waits up to `timeout` for the next message on `consumer`.
pub async fn next(consumer: &mut lapin::Consumer, timeout: Duration) -> Option<Received> {
    use futures_lite::StreamExt;
    let delivery = tokio::time::timeout(timeout, consumer.next()).await.ok()??.ok()?;
    Some(Received {
        routing_key: delivery.routing_key.to_string(),
        properties: delivery.properties.clone(),
        body: serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null),
    })
}

/// Collects messages until `count` arrived or `timeout` passed.
pub async fn collect(consumer: &mut lapin::Consumer, count: usize, timeout: Duration) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(consumer, left).await {
            Some(received) => out.push(received),
            None => break,
        }
    }
    out
}

/// A worker process, killed when dropped; its log is kept for failure messages.
pub struct WorkerProcess {
    pub child: std::process::Child,
    log: tempfile::NamedTempFile,
    /// The port of its health and metrics endpoint.
    pub port: u16,
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `path` from a local port: the status and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `path` until it answers `status`, up to `timeout`.
pub fn wait_for_status(port: u16, path: &str, status: u16, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if http_get(port, path).is_some_and(|(s, _)| s == status) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl WorkerProcess {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit status.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in typst that notes each start in `dir/started-*`, waits `delay` seconds, then runs
/// the real typst (or crashes, while `dir/crash` exists and holds a number above 0).
pub fn slow_typst(dir: &Path, delay: f64) -> PathBuf {
    let real = which_typst();
    let path = dir.join("typst");
    let script = format!(
        "#!/bin/sh\ntouch {dir}/started-$$\nsleep {delay}\n\
         if [ -f {dir}/crash ]; then n=$(cat {dir}/crash); if [ \"$n\" -gt 0 ]; then echo $((n-1)) > {dir}/crash; kill -KILL $$; fi; fi\n\
         exec {real} \"$@\"\n",
        dir = dir.display(),
        real = real.display(),
    );
    write_script(&path, &script);
    path
}

/// Writes an executable script: the stand-ins for typst.
pub fn write_script(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `rabbitmqctl` (the broker's own control tool), failing the test if it fails.
#[allow(dead_code)] // for tests/faults.rs and tests/restart.rs, which restart the broker
pub fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// How many typst runs the stand-in has started.
pub fn typst_starts(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("started-"))
        .count()
}

/// Waits until typst has started `n` times in `dir` (see `slow_typst`); fails after `within`
/// with `log()`, the worker's log.
pub async fn wait_for_typst_starts(dir: &Path, n: usize, within: Duration, log: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + within;
    while typst_starts(dir) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "typst started {} of {n} times: {}",
            typst_starts(dir),
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real typst on the PATH, for stand-ins that end by running it.
pub fn which_typst() -> PathBuf {
    let output = Command::new("sh").args(["-c", "command -v typst"]).output().unwrap();
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Checks `value` against the project's JSON Schema `docs/schema/<name>.schema.json`.
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/schema/{name}.schema.json"));
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name} schema rejects {value}: {errors:?}");
}

/// A PostgreSQL schema of one test's own in the `test` database, dropped with it.
pub struct PgSchema {
    pub name: String,
    /// A URL whose connections work in this schema.
    pub url: String,
}

impl PgSchema {
    pub async fn new() -> PgSchema {
        let name = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let client = pg_client(PG_URL).await;
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        let url = format!("{PG_URL}?options=-c%20search_path%3D{name}");
        PgSchema { name, url }
    }

    /// How many facts the schema's table holds (0 when there is no table yet).
    pub async fn count(&self) -> i64 {
        let client = pg_client(&self.url).await;
        match client.query_one("SELECT count(*) FROM facts", &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0,
        }
    }

    pub async fn drop_schema(&self) {
        let client = pg_client(PG_URL).await;
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

/// The test database on this machine (trust authentication).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL runs");
    tokio::spawn(connection);
    client
}
