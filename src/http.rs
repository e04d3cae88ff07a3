//! The health and metrics endpoint on `http.listen`: `/healthz` (alive, and the job loop is
//! making progress), `/readyz` (connected to the broker and consuming; 503 otherwise) and
//! `/metrics` (Prometheus). The worker reports into [`Health`] and the `metrics` facade.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How long the job loop may go without a sign of life before `/healthz` fails.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// Metric names, in one place.
pub mod names {
    pub const JOBS: &str = "tradebulletin_jobs_total";
    pub const STAGE_SECONDS: &str = "tradebulletin_stage_seconds";
    pub const RETRIES: &str = "tradebulletin_retries_total";
    pub const IN_FLIGHT: &str = "tradebulletin_jobs_in_flight";
    pub const BROKER_CONNECTED: &str = "tradebulletin_broker_connected";
}

/// What the worker reports about itself.
#[derive(Debug, Default)]
pub struct Health {
    consuming: AtomicBool,
    /// Milliseconds since the epoch of the job loop's last sign of life.
    heartbeat_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Health {
    pub fn new() -> Arc<Health> {
        let health = Arc::new(Health::default());
        health.beat();
        health
    }

    /// The job loop is alive.
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the worker is connected to the broker and consuming.
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
        metrics::gauge!(names::BROKER_CONNECTED).set(if consuming { 1.0 } else { 0.0 });
    }

    pub fn consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    pub fn alive(&self) -> bool {
        now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)) < STALL_AFTER.as_millis() as u64
    }
}

/// Installs the Prometheus recorder for this process, with buckets fit for job stages.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(&buckets)
        .context("while setting histogram buckets")?
        .install_recorder()
        .context("while installing the metrics recorder")?;
    metrics::describe_counter!(names::JOBS, "Jobs settled, by outcome");
    metrics::describe_histogram!(
        names::STAGE_SECONDS,
        metrics::Unit::Seconds,
        "Time spent in each stage of a job"
    );
    metrics::describe_counter!(names::RETRIES, "Jobs sent to a delay queue for another attempt");
    metrics::describe_gauge!(names::IN_FLIGHT, "Jobs running now");
    metrics::describe_gauge!(names::BROKER_CONNECTED, "1 while connected to the broker and consuming");
    metrics::gauge!(names::BROKER_CONNECTED).set(0.0);
    metrics::gauge!(names::IN_FLIGHT).set(0.0);
    Ok(handle)
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// Serves the endpoint on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { health, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("while serving HTTP")
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the job loop has stalled\n")
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.consuming() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to the broker\n")
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// GETs `path` from the endpoint at `listen` (a wildcard address means this host) and returns
/// the status code: what `tradebulletin healthcheck` and container health checks use.
pub async fn probe(listen: &str, path: &str) -> anyhow::Result<u16> {
    let address = listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("{address} did not answer within 5 s"))?
        .with_context(|| format!("while asking {address}{path}"))?;
    let status_line = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer from {address}: {status_line:?}"))
}
