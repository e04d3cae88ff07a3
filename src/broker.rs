//! RabbitMQ: connecting (heartbeats on), the topology of the contract declared idempotently,
//! and publishing with publisher confirms, the mandatory flag and a timeout.
//!
//! `amqps://` URLs connect over TLS (rustls), trusting the system's roots plus
//! `amqp.tls_ca_file`, and presenting `amqp.tls_cert_file` when the broker asks for a client
//! certificate.
//!
//! Topology, with names from `[amqp]`:
//! - `bulletin.requests`: durable quorum queue with a delivery limit and at-least-once
//!   dead-lettering to `bulletin.dlx`, which routes to `bulletin.requests.dead`;
//! - `bulletin.requests.retry.<ms>`: one quorum delay queue per retry step; a message waits
//!   there for its TTL and is dead-lettered (at least once) back onto the request queue;
//! - `bulletin.results`: durable topic exchange, with `bulletin.results.unrouted` as its
//!   alternate exchange and queue, so that a result nobody has bound a queue for is kept
//!   rather than lost.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use crate::settings::{AmqpSettings, WorkerSettings};

/// The header that counts a job's attempts across retries.
pub const ATTEMPT_HEADER: &str = "x-tradebulletin-attempt";

/// The names and settings of the broker objects the worker uses.
#[derive(Debug, Clone)]
pub struct Topology {
    pub request_queue: String,
    pub results_exchange: String,
    pub unrouted: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub delivery_limit: u32,
    /// The delay queue of each retry, in order: (queue name, delay).
    pub retries: Vec<(String, Duration)>,
}

impl Topology {
    pub fn new(amqp: &AmqpSettings, worker: &WorkerSettings) -> Topology {
        let retries = (0..worker.max_attempts.saturating_sub(1))
            .map(|step| {
                let delay = worker.retry_delay_ms.saturating_mul(1 << step.min(16));
                (
                    format!("{}.retry.{delay}ms", amqp.request_queue),
                    Duration::from_millis(delay),
                )
            })
            .collect();
        Topology {
            request_queue: amqp.request_queue.clone(),
            results_exchange: amqp.results_exchange.clone(),
            unrouted: format!("{}.unrouted", amqp.results_exchange),
            dead_letter_exchange: amqp.dead_letter_exchange.clone(),
            dead_letter_queue: amqp.dead_letter_queue.clone(),
            delivery_limit: amqp.delivery_limit,
            retries,
        }
    }

    /// The delay queue for the retry after attempt `attempt` (1-based), if retries remain.
    pub fn retry_queue(&self, attempt: u32) -> Option<&(String, Duration)> {
        self.retries.get(attempt.checked_sub(1)? as usize)
    }

    /// Deletes every queue and exchange of this topology, for tests and benchmarks that made
    /// their own. Best effort: what is already gone is skipped.
    pub async fn delete(&self, channel: &Channel) {
        let mut queues = vec![&self.request_queue, &self.dead_letter_queue, &self.unrouted];
        queues.extend(self.retries.iter().map(|(queue, _)| queue));
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&self.results_exchange, &self.unrouted, &self.dead_letter_exchange] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    /// Declares everything; safe to repeat, and what every worker does at start.
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("while declaring exchange {}", self.dead_letter_exchange))?;
        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), string("quorum"));
        declare_queue(channel, &self.dead_letter_queue, durable, dead_args).await?;
        bind(channel, &self.dead_letter_queue, &self.dead_letter_exchange, "#").await?;

        let mut request_args = FieldTable::default();
        request_args.insert("x-queue-type".into(), string("quorum"));
        request_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(self.delivery_limit.into()),
        );
        request_args.insert("x-dead-letter-exchange".into(), string(&self.dead_letter_exchange));
        request_args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        request_args.insert("x-overflow".into(), string("reject-publish"));
        declare_queue(channel, &self.request_queue, durable, request_args).await?;

        // Quorum queues with at-least-once dead-lettering: a classic queue's dead-lettering is
        // at most once, and drops a retry whose TTL runs out while the request queue is not
        // ready yet (as just after a broker restart). The fault suite caught that.
        for (queue, delay) in &self.retries {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), string("quorum"));
            args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
            args.insert("x-overflow".into(), string("reject-publish"));
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
            args.insert("x-dead-letter-exchange".into(), string(""));
            args.insert("x-dead-letter-routing-key".into(), string(&self.request_queue));
            declare_queue(channel, queue, durable, args).await?;
        }

        channel
            .exchange_declare(
                self.unrouted.as_str().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("while declaring exchange {}", self.unrouted))?;
        let mut unrouted_args = FieldTable::default();
        unrouted_args.insert("x-max-length".into(), AMQPValue::LongLongInt(100_000));
        declare_queue(channel, &self.unrouted, durable, unrouted_args).await?;
        bind(channel, &self.unrouted, &self.unrouted, "#").await?;
        let mut results_args = FieldTable::default();
        results_args.insert("alternate-exchange".into(), string(&self.unrouted));
        channel
            .exchange_declare(
                self.results_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable_exchange,
                results_args,
            )
            .await
            .with_context(|| format!("while declaring exchange {}", self.results_exchange))?;
        Ok(())
    }
}

fn string(text: &str) -> AMQPValue {
    AMQPValue::LongString(text.into())
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> anyhow::Result<()> {
    channel
        .queue_declare(name.into(), options, args)
        .await
        .with_context(|| format!("while declaring queue {name}"))?;
    Ok(())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> anyhow::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("while binding {queue} to {exchange}"))
}

/// The TLS files of `[amqp]`, read and checked: the extra CA certificates and the client
/// certificate with its key. Errors name the setting and the file.
pub fn tls_config(amqp: &AmqpSettings) -> anyhow::Result<OwnedTLSConfig> {
    let mut config = OwnedTLSConfig::default();
    if !amqp.tls_ca_file.is_empty() {
        let ca = crate::tls::read_certificates(Path::new(&amqp.tls_ca_file), "amqp.tls_ca_file")?;
        config.cert_chain = Some(ca.pem);
    }
    if !amqp.tls_cert_file.is_empty() || !amqp.tls_key_file.is_empty() {
        let identity = crate::tls::read_client_identity(
            Path::new(&amqp.tls_cert_file),
            "amqp.tls_cert_file",
            Path::new(&amqp.tls_key_file),
            "amqp.tls_key_file",
        )?;
        config.identity = Some(OwnedIdentity::PKCS8 {
            pem: identity.cert_pem.into_bytes(),
            key: identity.key_pem.into_bytes(),
        });
    }
    Ok(config)
}

/// Connects as `[amqp]` says: its URL and heartbeat and, for `amqps://`, its TLS files, read
/// at each call so that renewed files are used from the next reconnection on.
pub async fn connect_with_settings(amqp: &AmqpSettings, name: &str) -> anyhow::Result<Connection> {
    let tls = tls_config(amqp)?;
    let connected = connect_with_tls(&amqp.url, amqp.heartbeat_secs, name, tls).await;
    if !amqp.url.starts_with("amqps://") {
        return connected;
    }
    // TLS failures (an unknown CA, a refused client certificate) say which files were used.
    connected.with_context(|| {
        let roots = match amqp.tls_ca_file.as_str() {
            "" => "the system's roots".to_string(),
            ca => format!("the system's roots and amqp.tls_ca_file {ca}"),
        };
        let client = match amqp.tls_cert_file.as_str() {
            "" => "no client certificate".to_string(),
            cert => format!("client certificate amqp.tls_cert_file {cert}"),
        };
        format!("while connecting with TLS, trusting {roots}, with {client}")
    })
}

/// Connects with heartbeats on, trusting the system's roots for `amqps://`; the URL's own
/// `heartbeat` parameter wins if it has one.
pub async fn connect(url: &str, heartbeat_secs: u16, name: &str) -> anyhow::Result<Connection> {
    connect_with_tls(url, heartbeat_secs, name, OwnedTLSConfig::default()).await
}

/// Connects with heartbeats on and, for `amqps://`, the TLS configuration `tls`.
pub async fn connect_with_tls(
    url: &str,
    heartbeat_secs: u16,
    name: &str,
    tls: OwnedTLSConfig,
) -> anyhow::Result<Connection> {
    let url = if url.contains("heartbeat=") {
        url.to_string()
    } else {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}heartbeat={heartbeat_secs}")
    };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime().context("while finding the async runtime")?;
    Connection::connect_with_config(&url, properties, tls, runtime)
        .await
        .with_context(|| format!("while connecting to {}", crate::settings::redact_url(&url)))
}

/// A channel in confirm mode, for publishing.
pub async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection
        .create_channel()
        .await
        .context("while opening a publishing channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("while enabling publisher confirms")?;
    Ok(channel)
}

/// Properties of a persistent JSON message.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

/// Publishes and waits for the broker's confirm. Fails when the broker nacks, returns the
/// message as unroutable (with `mandatory`), or does not answer within `timeout`.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let options = BasicPublishOptions {
        mandatory,
        ..BasicPublishOptions::default()
    };
    let confirmed = tokio::time::timeout(timeout, async {
        channel
            .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
            .await?
            .await
    })
    .await;
    let destination = if exchange.is_empty() {
        format!("queue {routing_key}")
    } else {
        format!("exchange {exchange}")
    };
    match confirmed {
        Err(_) => bail!("the broker did not confirm a publish to {destination} within {timeout:?}"),
        Ok(Err(e)) => Err(e).with_context(|| format!("while publishing to {destination}")),
        Ok(Ok(Confirmation::Ack(Some(returned)))) => {
            bail!(
                "the broker returned a publish to {destination} key {routing_key} as unroutable ({})",
                returned.reply_text
            )
        }
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Nack(_))) => bail!("the broker refused a publish to {destination}"),
        Ok(Ok(Confirmation::NotRequested)) => bail!("publisher confirms are off on this channel"),
    }
}

/// Reads an integer header, whatever integer type the producer used.
pub fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(&ShortString::from(name))?
        .clone();
    let n: i64 = match value {
        AMQPValue::ShortShortInt(v) => v.into(),
        AMQPValue::ShortShortUInt(v) => v.into(),
        AMQPValue::ShortInt(v) => v.into(),
        AMQPValue::ShortUInt(v) => v.into(),
        AMQPValue::LongInt(v) => v.into(),
        AMQPValue::LongUInt(v) => v.into(),
        AMQPValue::LongLongInt(v) => v,
        _ => return None,
    };
    u32::try_from(n).ok()
}
