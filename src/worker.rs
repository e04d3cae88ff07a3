//! The worker: consumes requests, runs each job from delivery to result, and settles the
//! delivery by the job's [`Outcome`]. Reconnects with backoff when the broker goes away, and on
//! shutdown stops consuming, lets the jobs in flight finish within the grace period, and
//! closes cleanly.
//!
//! A delivery is acknowledged only after its result (or its retry copy) is confirmed by the
//! broker. Permanent failures publish a `failed` result and are settled at once; passing ones
//! (typst crashed or timed out, storage down) go to a delay queue and come back, a bounded
//! number of times, then fail for good and are dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field};

use crate::broker::{self, ATTEMPT_HEADER, Topology};
use crate::http::{Health, names};
use crate::job::{self, ErrorBody, ErrorCode, JobError, JobResult, Rejected, Request};
use crate::render::{self, Renderer};
use crate::settings::Settings;
use crate::storage::{Storage, StoredPdf};
use crate::store::Store;
use crate::summary::Summary;

/// What to do with a delivery once its job has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The result was published and confirmed: acknowledge.
    Ack,
    /// A copy went to a delay queue and was confirmed: acknowledge this one.
    Retried { queue: String },
    /// Failed for good after passing errors; the failed result is published: dead-letter it.
    DeadLetter,
    /// The result could not be published: give the delivery back to the broker.
    Requeue,
}

/// Everything a job needs, shared by all jobs of a worker.
pub struct Worker {
    settings: Settings,
    topology: Topology,
    store: Store,
    renderer: Renderer,
    storage: Storage,
    /// How many jobs run at once (`Settings::job_slots`).
    slots: Arc<Semaphore>,
    health: Arc<Health>,
}

impl Worker {
    /// Builds a worker from validated settings: loads the facts, checks typst's fonts, the
    /// storage URL and the broker's TLS files, all before any message is taken.
    pub fn new(settings: Settings, store: Store, renderer: Renderer, health: Arc<Health>) -> anyhow::Result<Worker> {
        let storage = Storage::open(&settings.storage)?;
        // Read again at each connection; checked here so that a wrong file stops the start.
        broker::tls_config(&settings.amqp)?;
        let topology = Topology::new(&settings.amqp, &settings.worker);
        let slots = Arc::new(Semaphore::new(settings.job_slots()));
        Ok(Worker {
            settings,
            topology,
            store,
            renderer,
            storage,
            slots,
            health,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Consumes until `shutdown` is cancelled, reconnecting when the broker goes away.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let mut backoff = Duration::from_millis(250);
        while !shutdown.is_cancelled() {
            self.health.beat();
            let ended = self.session(&shutdown, &tracker).await;
            self.health.set_consuming(false);
            match ended {
                Ok(()) => backoff = Duration::from_millis(250),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "broker session ended");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
        tracker.close();
        tracker.wait().await;
        tracing::info!("worker stopped");
        Ok(())
    }

    /// One connection: declare, consume, hand deliveries to jobs. Returns `Ok` on shutdown
    /// (after the jobs in flight have settled) and `Err` when the connection is lost.
    async fn session(self: &Arc<Self>, shutdown: &CancellationToken, tracker: &TaskTracker) -> anyhow::Result<()> {
        let connection = broker::connect_with_settings(&self.settings.amqp, "tradebulletin worker").await?;
        let publisher = broker::confirm_channel(&connection).await?;
        self.topology.declare(&publisher).await?;
        let consuming = connection
            .create_channel()
            .await
            .context("while opening the consuming channel")?;
        consuming
            .basic_qos(self.settings.prefetch(), BasicQosOptions::default())
            .await
            .context("while setting the prefetch")?;
        let tag = format!("tradebulletin-{}", uuid::Uuid::new_v4());
        let mut consumer = consuming
            .basic_consume(
                self.topology.request_queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("while consuming {}", self.topology.request_queue))?;
        tracing::info!(queue = %self.topology.request_queue, concurrency = self.settings.worker.concurrency, "consuming");
        self.health.set_consuming(true);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut permit = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.health.beat(),
                acquired = self.slots.clone().acquire_owned(), if permit.is_none() => {
                    permit = Some(acquired.context("the job slots closed")?);
                }
                next = consumer.next(), if permit.is_some() => {
                    let delivery = match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(e)) => return Err(e).context("while consuming"),
                        None => anyhow::bail!("the broker cancelled the consumer"),
                    };
                    let permit = permit.take();
                    let worker = Arc::clone(self);
                    let publisher = publisher.clone();
                    tracker.spawn(async move {
                        metrics::gauge!(names::IN_FLIGHT).increment(1.0);
                        worker.handle(delivery, &publisher).await;
                        metrics::gauge!(names::IN_FLIGHT).decrement(1.0);
                        drop(permit);
                    });
                }
            }
        }
        self.health.set_consuming(false);
        self.drain(&connection, &consuming, &tag, tracker).await;
        Ok(())
    }

    /// Stops consuming, waits for the jobs in flight (they ack on this connection) within the
    /// grace period, and closes.
    async fn drain(&self, connection: &Connection, consuming: &Channel, tag: &str, tracker: &TaskTracker) {
        let _ = consuming.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
        let grace = Duration::from_secs(self.settings.worker.shutdown_grace_secs);
        tracing::info!(
            in_flight = tracker.len(),
            ?grace,
            "stopping: waiting for jobs in flight"
        );
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over: unfinished jobs go back to the queue"
            );
        }
        let _ = connection.close(200, "worker stopping".into()).await;
    }

    /// Runs one delivery's job and settles the delivery by its outcome.
    async fn handle(&self, delivery: Delivery, publisher: &Channel) {
        let attempt = broker::header_u32(&delivery.properties, ATTEMPT_HEADER)
            .unwrap_or(1)
            .max(1);
        let span = tracing::info_span!(
            "job",
            job_id = field::Empty,
            region = field::Empty,
            period = field::Empty,
            attempt,
            outcome = field::Empty,
            summary_ms = field::Empty,
            render_ms = field::Empty,
            compile_ms = field::Empty,
            store_ms = field::Empty,
            publish_ms = field::Empty,
        );
        let job = std::panic::AssertUnwindSafe(self.process(&delivery, attempt, publisher));
        let outcome = futures_lite::FutureExt::catch_unwind(job)
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| {
                // A bug, not the message's fault: redeliver; the delivery limit bounds the loop.
                tracing::error!(parent: &span, "job panicked");
                Outcome::Requeue
            });
        let label = match &outcome {
            Outcome::Ack => "ack",
            Outcome::Retried { .. } => "retried",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Requeue => "requeue",
        };
        span.record("outcome", label);
        metrics::counter!(names::JOBS, "outcome" => label).increment(1);
        let settled = match &outcome {
            Outcome::Ack | Outcome::Retried { .. } => delivery.ack(BasicAckOptions::default()).await,
            Outcome::DeadLetter => {
                let options = BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                };
                delivery.nack(options).await
            }
            Outcome::Requeue => {
                // Back off a little so a broker in trouble is not hammered with redeliveries.
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        let _entered = span.enter();
        match settled {
            Ok(_) => tracing::info!("job settled"),
            Err(e) => tracing::warn!(error = %e, "could not settle the delivery; the broker will redeliver it"),
        }
    }

    /// Parses, summarises, renders, stores and publishes; decides the outcome.
    async fn process(&self, delivery: &Delivery, attempt: u32, publisher: &Channel) -> Outcome {
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().map(|id| id.as_str());
        let parsed = job::parse_request(
            &delivery.data,
            message_id,
            self.settings.worker.max_message_bytes,
            || uuid::Uuid::new_v4().to_string(),
        );
        let request = match parsed {
            Ok(request) => request,
            Err(rejected) => {
                let span = tracing::Span::current();
                span.record("job_id", rejected.job_id.as_str());
                tracing::info!(code = rejected.error.code.as_str(), error = %rejected.error.message, "request rejected");
                let result = failed_result(&rejected, attempt);
                let key = job::routing_key(false, rejected.region, rejected.period);
                return self.settle_with(publisher, properties, &key, &result).await;
            }
        };
        let span = tracing::Span::current();
        span.record("job_id", request.job_id.as_str());
        span.record("region", request.region.name_en());
        span.record("period", request.period.to_string());
        match self.run_job(&request, attempt).await {
            Ok(result) => {
                let key = job::routing_key(true, Some(request.region), Some(request.period));
                self.settle_with(publisher, properties, &key, &result).await
            }
            Err(error) if error.transient && attempt < self.settings.worker.max_attempts => {
                tracing::warn!(code = error.code.as_str(), error = %error.message, "passing failure: retrying later");
                self.retry(publisher, delivery, &request, attempt).await
            }
            Err(error) => {
                tracing::info!(code = error.code.as_str(), error = %error.message, "job failed");
                let rejected = Rejected {
                    job_id: request.job_id.clone(),
                    region: Some(request.region),
                    period: Some(request.period),
                    language: request.language,
                    error: error.clone(),
                };
                let result = failed_result(&rejected, attempt);
                let key = job::routing_key(false, Some(request.region), Some(request.period));
                match self.settle_with(publisher, properties, &key, &result).await {
                    Outcome::Ack if error.transient => Outcome::DeadLetter,
                    other => other,
                }
            }
        }
    }

    /// The job proper: the PDF already stored for this job id, or a new one.
    async fn run_job(&self, request: &Request, attempt: u32) -> Result<JobResult, JobError> {
        let span = tracing::Span::current();
        let started = Instant::now();
        let summary = job::summarise(request, &self.store).await?;
        stage(&span, "summary", started.elapsed());
        let key = Storage::key(&request.region.slug(), &request.period.to_string(), &request.job_id);
        let stored = self.stored_or_new_pdf(&summary, request, &key).await?;
        Ok(JobResult::Succeeded {
            job_id: request.job_id.clone(),
            region: request.region.name_en().to_string(),
            period: request.period.to_string(),
            language: request.language,
            pdf: stored,
            summary: serde_json::to_value(&summary)
                .map_err(|e| JobError::permanent(ErrorCode::Internal, e.to_string()))?,
            finished_at: job::now_rfc3339(),
            attempt,
        })
    }

    /// The job's PDF: the one already stored under `key` (a redelivery, a repeated request),
    /// else a new one; see [`stored_or_new`].
    async fn stored_or_new_pdf(&self, summary: &Summary, request: &Request, key: &str) -> Result<StoredPdf, JobError> {
        let found = async { self.storage.find(key).await.map_err(storage_error) };
        stored_or_new(found, self.new_pdf(summary, request, key)).await
    }

    /// Renders the job's bulletin and stores it under `key`.
    async fn new_pdf(&self, summary: &Summary, request: &Request, key: &str) -> Result<StoredPdf, JobError> {
        let span = tracing::Span::current();
        let started = Instant::now();
        let bulletin = self
            .renderer
            .render(summary, request.language, render::issue_date())
            .await?;
        stage(&span, "render", started.elapsed());
        stage(&span, "compile", bulletin.compile_time);
        let started = Instant::now();
        let stored = self
            .storage
            .put(key, &bulletin.pdf, &request.job_id)
            .await
            .map_err(storage_error)?;
        stage(&span, "store", started.elapsed());
        Ok(stored)
    }

    /// Publishes the result to the results exchange (mandatory) and to `reply_to` if set.
    async fn settle_with(
        &self,
        publisher: &Channel,
        request: &BasicProperties,
        key: &str,
        result: &JobResult,
    ) -> Outcome {
        let started = Instant::now();
        let body = serde_json::to_vec(result).expect("results serialise");
        let mut properties = broker::json_properties().with_message_id(result.job_id().into());
        if let Some(correlation) = request.correlation_id() {
            properties = properties.with_correlation_id(correlation.clone());
        }
        let timeout = Duration::from_secs(self.settings.amqp.publish_timeout_secs);
        let exchange = &self.topology.results_exchange;
        if let Err(e) = broker::publish(publisher, exchange, key, &body, properties.clone(), true, timeout).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "result not confirmed: the request goes back to the queue"
            );
            return Outcome::Requeue;
        }
        if let Some(reply_to) = request.reply_to().as_ref().filter(|r| !r.as_str().is_empty()) {
            // Best effort: a client that has gone away must not hold the job back.
            if let Err(e) = broker::publish(publisher, "", reply_to.as_str(), &body, properties, false, timeout).await {
                tracing::warn!(error = format!("{e:#}"), reply_to = %reply_to, "reply not confirmed");
            }
        }
        stage(&tracing::Span::current(), "publish", started.elapsed());
        Outcome::Ack
    }

    /// Sends a copy of the request to the delay queue of this attempt, counting the attempt.
    async fn retry(&self, publisher: &Channel, delivery: &Delivery, request: &Request, attempt: u32) -> Outcome {
        let Some((queue, delay)) = self.topology.retry_queue(attempt) else {
            return Outcome::DeadLetter;
        };
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt) + 1));
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_message_id(request.job_id.as_str().into())
            .with_delivery_mode(2);
        let timeout = Duration::from_secs(self.settings.amqp.publish_timeout_secs);
        match broker::publish(publisher, "", queue, &delivery.data, properties, true, timeout).await {
            Ok(()) => {
                metrics::counter!(names::RETRIES).increment(1);
                tracing::info!(queue = %queue, ?delay, next_attempt = attempt + 1, "retry scheduled");
                Outcome::Retried { queue: queue.clone() }
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "retry not confirmed: the request goes back to the queue"
                );
                Outcome::Requeue
            }
        }
    }
}

/// Runs the look for a stored PDF (`found`) and the making of a new one (`made`) together, so
/// that the look (a trip to the blocking pool for files, a round trip to S3) adds nothing to a
/// new job's latency. A PDF found stored wins: the making is dropped (typst is killed), and a
/// failed making of a job whose PDF is stored is no failure. A new PDF made first stands, as it
/// is stored create-only: what `made` returns is what is stored.
async fn stored_or_new<F, M>(found: F, made: M) -> Result<StoredPdf, JobError>
where
    F: Future<Output = Result<Option<StoredPdf>, JobError>>,
    M: Future<Output = Result<StoredPdf, JobError>>,
{
    tokio::pin!(found, made);
    let already_stored = |stored: StoredPdf| {
        tracing::info!(location = %stored.location, "PDF already stored for this job: publishing it");
        stored
    };
    tokio::select! {
        found = &mut found => match found? {
            Some(stored) => Ok(already_stored(stored)),
            None => made.await,
        },
        made = &mut made => match made {
            Ok(stored) => Ok(stored),
            Err(error) => match found.await? {
                Some(stored) => Ok(already_stored(stored)),
                None => Err(error),
            },
        },
    }
}

/// A storage error: passing, so the job is tried again later.
fn storage_error(error: anyhow::Error) -> JobError {
    JobError::transient(ErrorCode::Internal, format!("storage: {error:#}"))
}

fn failed_result(rejected: &Rejected, attempt: u32) -> JobResult {
    JobResult::Failed {
        job_id: rejected.job_id.clone(),
        region: rejected.region.map(|r| r.name_en().to_string()),
        period: rejected.period.map(|p| p.to_string()),
        language: rejected.language,
        error: ErrorBody {
            code: rejected.error.code,
            message: rejected.error.message.clone(),
        },
        finished_at: job::now_rfc3339(),
        attempt,
    }
}

/// Records a stage's time on the job's span (`<stage>_ms`) and in its histogram.
fn stage(span: &tracing::Span, name: &'static str, took: Duration) {
    span.record(format!("{name}_ms").as_str(), took.as_millis() as u64);
    metrics::histogram!(names::STAGE_SECONDS, "stage" => name).record(took.as_secs_f64());
}

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("while listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("while listening for SIGINT")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        cancel.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn pdf(location: &str) -> StoredPdf {
        StoredPdf {
            location: location.into(),
            bytes: 1,
            sha256: "00".into(),
            url: None,
            url_expires_at: None,
        }
    }

    fn crashed() -> JobError {
        JobError::transient(ErrorCode::RenderFailed, "typst crashed")
    }

    /// `value` after `ms` milliseconds (of the paused test clock).
    async fn after<T>(ms: u64, value: T) -> T {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }

    /// Sets `dropped` when dropped before it ends: a compile that was abandoned.
    struct Making<'a> {
        dropped: &'a AtomicBool,
        done: bool,
    }

    impl Drop for Making<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.dropped.store(true, Ordering::SeqCst);
            }
        }
    }

    async fn make(ms: u64, result: Result<StoredPdf, JobError>, dropped: &AtomicBool) -> Result<StoredPdf, JobError> {
        let mut making = Making { dropped, done: false };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        making.done = true;
        result
    }

    #[tokio::test(start_paused = true)]
    async fn a_pdf_found_stored_wins_and_the_compile_is_dropped() {
        let dropped = AtomicBool::new(false);
        let got = stored_or_new(after(1, Ok(Some(pdf("old")))), make(20, Ok(pdf("new")), &dropped)).await;
        assert_eq!(got.unwrap(), pdf("old"));
        assert!(dropped.load(Ordering::SeqCst), "the compile was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_stored_waits_for_the_new_pdf() {
        let dropped = AtomicBool::new(false);
        let got = stored_or_new(after(1, Ok(None)), make(20, Ok(pdf("new")), &dropped)).await;
        assert_eq!(got.unwrap(), pdf("new"));
        assert!(!dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_compile_of_a_stored_job_publishes_the_stored_pdf() {
        let got = stored_or_new(after(20, Ok(Some(pdf("old")))), after(1, Err(crashed()))).await;
        assert_eq!(got.unwrap(), pdf("old"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_compile_of_a_new_job_is_its_error() {
        let got = stored_or_new(after(20, Ok(None)), after(1, Err(crashed()))).await;
        assert_eq!(got.unwrap_err().message, "typst crashed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_pdf_made_before_the_look_ends_stands() {
        let got = stored_or_new(after(20, Ok(None)), after(1, Ok(pdf("new")))).await;
        assert_eq!(got.unwrap(), pdf("new"));
    }

    #[tokio::test(start_paused = true)]
    async fn storage_down_fails_the_job_as_passing() {
        let down = Err(storage_error(anyhow::anyhow!("connection refused")));
        let got = stored_or_new(after(1, down), after(20, Ok(pdf("new")))).await;
        let error = got.unwrap_err();
        assert!(error.transient, "{error:?}");
        assert_eq!(error.message, "storage: connection refused");
    }
}
