//! Configuration: the embedded `config/default.toml`, a file layered over it (`--config` or
//! `TRADEBULLETIN_CONFIG`), then `TRADEBULLETIN__SECTION__KEY` environment variables.
//! Validated once at start-up, before any work.

use std::path::Path;

use anyhow::{Context, bail};
use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// The defaults, embedded so that the binary runs from anywhere.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub worker: WorkerSettings,
    pub data: DataSettings,
    pub render: RenderSettings,
    pub storage: StorageSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    pub url: String,
    pub request_queue: String,
    pub results_exchange: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub delivery_limit: u32,
    pub prefetch: u16,
    pub heartbeat_secs: u16,
    pub publish_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_delay_ms: u64,
    pub max_message_bytes: usize,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DataSettings {
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RenderSettings {
    pub typst: String,
    pub timeout_secs: u64,
    pub max_concurrent: usize,
    pub latin_fonts: String,
    pub cjk_fonts: String,
    pub publisher: String,
}

#[derive(Clone, Deserialize)]
pub struct StorageSettings {
    pub url: String,
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub presign_secs: u64,
}

/// Shown without the secret.
impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("presign_secs", &self.presign_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

impl Settings {
    /// Loads the defaults, then `file` if given, then the environment; checks the result.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(file) = file {
            if !file.is_file() {
                bail!("configuration file {} does not exist", file.display());
            }
            builder = builder.add_source(File::from(file).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("TRADEBULLETIN")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let settings: Settings = builder
            .build()
            .context("while reading the configuration")?
            .try_deserialize()
            .context("while reading the configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.worker.concurrency == 0 {
            bail!("worker.concurrency must be at least 1");
        }
        if self.worker.max_attempts == 0 {
            bail!("worker.max_attempts must be at least 1");
        }
        if self.render.timeout_secs == 0 {
            bail!("render.timeout_secs must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bail!("log.format must be \"text\" or \"json\", not {:?}", self.log.format);
        }
        for (key, name) in [
            ("amqp.request_queue", &self.amqp.request_queue),
            ("amqp.results_exchange", &self.amqp.results_exchange),
            ("amqp.dead_letter_exchange", &self.amqp.dead_letter_exchange),
            ("amqp.dead_letter_queue", &self.amqp.dead_letter_queue),
        ] {
            if name.is_empty() || name.len() > 255 {
                bail!("{key} must be 1 to 255 characters");
            }
        }
        Ok(())
    }

    /// Compiles at once: `render.max_concurrent`, or the worker's concurrency when 0.
    pub fn compile_slots(&self) -> usize {
        match self.render.max_concurrent {
            0 => self.worker.concurrency,
            n => n,
        }
    }

    /// Deliveries in flight: `amqp.prefetch`, or the worker's concurrency when 0.
    pub fn prefetch(&self) -> u16 {
        match self.amqp.prefetch {
            0 => u16::try_from(self.worker.concurrency).unwrap_or(u16::MAX),
            n => n,
        }
    }
}

/// Hides the password of a URL for logs: `amqp://guest:***@host/`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_hold_every_contract_key() {
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(settings.amqp.request_queue, "bulletin.requests");
        assert_eq!(settings.amqp.results_exchange, "bulletin.results");
        assert_eq!(settings.data.source, "builtin");
        assert_eq!(settings.prefetch(), settings.worker.concurrency as u16);
        assert!(settings.storage.url.starts_with("file://"));
    }

    #[test]
    fn a_file_layers_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[worker]\nconcurrency = 7\n").unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        assert_eq!(settings.worker.concurrency, 7);
        assert_eq!(settings.render.timeout_secs, 30);
        let err = Settings::load(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host/"), "amqp://host/");
    }
}
