//! The producer and subscriber sides of the contract, as the `enqueue` and `subscribe`
//! commands use them: publish a request (and wait for its result), and follow results as they
//! arrive (and download their PDFs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use serde::Serialize;

use crate::broker::{self, Topology};
use crate::job::JobResult;
use crate::settings::{Settings, StorageSettings};
use crate::storage::{Storage, safe_name, sha256_hex};

/// A request as `enqueue` sends it.
#[derive(Debug, Clone, Serialize)]
pub struct Enqueue {
    pub job_id: String,
    pub region: String,
    pub period: String,
    pub language: String,
}

/// How `enqueue --wait` ended.
#[derive(Debug)]
pub enum Waited {
    Result { body: Vec<u8>, succeeded: bool },
    TimedOut,
}

/// Connects, declares the topology (so nothing is published into the void) and opens a
/// confirm-mode channel.
async fn open(settings: &Settings, name: &str) -> anyhow::Result<(Connection, Channel, Topology)> {
    let amqp = &settings.amqp;
    let connection = broker::connect_with_settings(amqp, name).await?;
    let channel = broker::confirm_channel(&connection).await?;
    let topology = Topology::new(amqp, &settings.worker);
    topology.declare(&channel).await?;
    Ok((connection, channel, topology))
}

/// A server-named exclusive queue and a consumer on it.
async fn private_queue(channel: &Channel) -> anyhow::Result<(String, Consumer)> {
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .context("while declaring a private queue")?;
    let name = queue.name().to_string();
    let consumer = channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("while consuming the private queue")?;
    Ok((name, consumer))
}

/// Publishes one request; with `wait`, waits that long for its result on a private reply queue.
pub async fn enqueue(settings: &Settings, request: &Enqueue, wait: Option<Duration>) -> anyhow::Result<Option<Waited>> {
    let (connection, channel, topology) = open(settings, "tradebulletin enqueue").await?;
    let correlation = uuid::Uuid::new_v4().to_string();
    let mut properties = broker::json_properties().with_message_id(request.job_id.as_str().into());
    let mut reply = None;
    if wait.is_some() {
        let (queue, consumer) = private_queue(&channel).await?;
        properties = properties
            .with_reply_to(queue.as_str().into())
            .with_correlation_id(correlation.as_str().into());
        reply = Some(consumer);
    }
    let body = serde_json::to_vec(request)?;
    let timeout = Duration::from_secs(settings.amqp.publish_timeout_secs);
    broker::publish(&channel, "", &topology.request_queue, &body, properties, true, timeout).await?;
    let (Some(limit), Some(mut consumer)) = (wait, reply) else {
        let _ = connection.close(200, "done".into()).await;
        return Ok(None);
    };
    let waited = tokio::time::timeout(limit, async {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.context("while waiting for the result")?;
            let _ = delivery.ack(BasicAckOptions::default()).await;
            let matches = delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|c| c.as_str() == correlation);
            if matches {
                let succeeded = serde_json::from_slice::<JobResult>(&delivery.data).is_ok_and(|r| r.succeeded());
                return Ok(Waited::Result {
                    body: delivery.data,
                    succeeded,
                });
            }
        }
        bail!("the reply queue was closed before the result came")
    })
    .await
    .unwrap_or(Ok(Waited::TimedOut));
    let _ = connection.close(200, "done".into()).await;
    waited.map(Some)
}

/// Follows results matching `binding`, calling `each` with every body, then downloading its
/// PDF into `download` if given (a failed download is reported, not fatal); stops after
/// `count` results if given, or when `stop` completes.
pub async fn subscribe(
    settings: &Settings,
    binding: &str,
    count: Option<usize>,
    download: Option<&Path>,
    stop: impl std::future::Future<Output = ()>,
    mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (connection, channel, topology) = open(settings, "tradebulletin subscribe").await?;
    let (queue, mut consumer) = private_queue(&channel).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            topology.results_exchange.as_str().into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("while binding to {} with {binding}", topology.results_exchange))?;
    tracing::info!(exchange = %topology.results_exchange, binding, "subscribed");
    tokio::pin!(stop);
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let delivery = tokio::select! {
            () = &mut stop => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery.context("while receiving results")?,
                None => bail!("the broker closed the subscription"),
            },
        };
        each(&delivery.data)?;
        if let Some(dir) = download {
            match serde_json::from_slice::<JobResult>(&delivery.data) {
                Ok(result) => match self::download(&result, dir, &settings.storage).await {
                    Ok(Some(path)) => tracing::info!(path = %path.display(), "downloaded"),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = format!("{e:#}"), "download failed"),
                },
                Err(e) => tracing::warn!(error = %e, "not a result: nothing to download"),
            }
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .context("while acknowledging a result")?;
        seen += 1;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// GETs a presigned URL.
pub async fn fetch_url(url: &str) -> anyhow::Result<Vec<u8>> {
    let response = reqwest::get(url).await.context("while downloading the presigned URL")?;
    let status = response.status();
    if !status.is_success() {
        bail!("the presigned URL answered {status}");
    }
    Ok(response
        .bytes()
        .await
        .context("while downloading the presigned URL")?
        .to_vec())
}

/// Downloads the PDF of a succeeded result into `dir` as `<job-id>.pdf`, checking its SHA-256:
/// from its location (a file, or the object store `storage` describes), else from its
/// presigned URL when the result has one.
pub async fn download(result: &JobResult, dir: &Path, storage: &StorageSettings) -> anyhow::Result<Option<PathBuf>> {
    let JobResult::Succeeded { job_id, pdf, .. } = result else {
        return Ok(None);
    };
    let bytes = match (Storage::fetch(&pdf.location, storage).await, &pdf.url) {
        (Ok(bytes), _) => bytes,
        (Err(direct), Some(url)) => fetch_url(url)
            .await
            .with_context(|| format!("{direct:#}; and by its URL"))?,
        (Err(direct), None) => return Err(direct),
    };
    let sha = sha256_hex(&bytes);
    if sha != pdf.sha256 {
        bail!(
            "{} has sha256 {sha}, not {} as the result says",
            pdf.location,
            pdf.sha256
        );
    }
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("while creating {}", dir.display()))?;
    let path = dir.join(format!("{}.pdf", safe_name(job_id)));
    tokio::fs::write(&path, &bytes)
        .await
        .with_context(|| format!("while writing {}", path.display()))?;
    Ok(Some(path))
}
