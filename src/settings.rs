//! Configuration: the embedded `config/default.toml`, a file layered over it (`--config` or
//! `TRADEBULLETIN_CONFIG`), then `TRADEBULLETIN__SECTION__KEY` environment variables.
//! Secrets may come from files (`amqp.url_file`, `data.source_file`,
//! `storage.secret_access_key_file`, ...), as Kubernetes and Docker mount them. Validated once
//! at start-up, before any work. The `Debug` of the settings shows no password or secret key.

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

#[derive(Clone, Deserialize)]
pub struct AmqpSettings {
    pub url: String,
    /// A file whose content replaces `url` (a mounted secret).
    pub url_file: String,
    /// For `amqps://`: PEM CA certificates trusted besides the system's roots.
    pub tls_ca_file: String,
    /// For `amqps://`: a PEM client certificate (chain) and its key, for brokers that ask for one.
    pub tls_cert_file: String,
    pub tls_key_file: String,
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

#[derive(Clone, Deserialize)]
pub struct DataSettings {
    pub source: String,
    /// A file whose content replaces `source` (a mounted secret).
    pub source_file: String,
    /// For PostgreSQL: the PEM CA certificates that `sslmode=verify-ca`/`verify-full` (and
    /// `require`) check the server against, unless the URL gives `sslrootcert`.
    pub tls_ca_file: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RenderSettings {
    pub typst: String,
    pub timeout_secs: u64,
    pub max_concurrent: usize,
    pub latin_fonts: String,
    pub cjk_fonts: String,
    pub cjk_fallback_fonts: String,
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
    /// Files whose content replaces `access_key_id` and `secret_access_key` (mounted secrets).
    pub access_key_id_file: String,
    pub secret_access_key_file: String,
    /// PEM CA certificates trusted besides the system's roots, for an HTTPS endpoint.
    pub tls_ca_file: String,
    pub presign_secs: u64,
}

/// Shown with the password of the URL hidden.
impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &redact_url(&self.url))
            .field("url_file", &self.url_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("request_queue", &self.request_queue)
            .field("results_exchange", &self.results_exchange)
            .field("dead_letter_exchange", &self.dead_letter_exchange)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("delivery_limit", &self.delivery_limit)
            .field("prefetch", &self.prefetch)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("publish_timeout_secs", &self.publish_timeout_secs)
            .finish()
    }
}

impl DataSettings {
    /// `tls_ca_file`, if set.
    pub fn ca_file(&self) -> Option<&Path> {
        (!self.tls_ca_file.is_empty()).then(|| Path::new(&self.tls_ca_file))
    }
}

/// Shown with the password of a database URL hidden.
impl std::fmt::Debug for DataSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSettings")
            .field("source", &redact_url(&self.source))
            .field("source_file", &self.source_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
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
            .field("access_key_id_file", &self.access_key_id_file)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("tls_ca_file", &self.tls_ca_file)
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
        let mut settings: Settings = builder
            .build()
            .context("while reading the configuration")?
            .try_deserialize()
            .context("while reading the configuration")?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Replaces each secret whose `*_file` key is set by that file's content, without the
    /// trailing line break.
    fn read_secret_files(&mut self) -> anyhow::Result<()> {
        for (key, file, value) in [
            ("amqp.url_file", &self.amqp.url_file, &mut self.amqp.url),
            ("data.source_file", &self.data.source_file, &mut self.data.source),
            (
                "storage.access_key_id_file",
                &self.storage.access_key_id_file,
                &mut self.storage.access_key_id,
            ),
            (
                "storage.secret_access_key_file",
                &self.storage.secret_access_key_file,
                &mut self.storage.secret_access_key,
            ),
        ] {
            if file.is_empty() {
                continue;
            }
            let text = std::fs::read_to_string(file).with_context(|| format!("while reading {key} {file}"))?;
            let secret = text.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                bail!("{key} {file} is empty");
            }
            *value = secret.to_string();
        }
        Ok(())
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
        let amqp = &self.amqp;
        if amqp.tls_cert_file.is_empty() != amqp.tls_key_file.is_empty() {
            bail!("amqp.tls_cert_file and amqp.tls_key_file go together: set both or neither");
        }
        let tls_files = [&amqp.tls_ca_file, &amqp.tls_cert_file].iter().any(|f| !f.is_empty());
        if tls_files && !amqp.url.starts_with("amqps://") {
            bail!(
                "amqp.tls_ca_file and amqp.tls_cert_file need an amqps:// amqp.url, not {}",
                redact_url(&amqp.url)
            );
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

    /// Jobs one worker holds at once: twice as many as it compiles, so that whenever a compile
    /// ends another job is already there to take its place, while the finished one is stored
    /// and published and the broker delivers the next.
    pub fn job_slots(&self) -> usize {
        self.worker.concurrency * 2
    }

    /// Deliveries in flight: `amqp.prefetch`, or the worker's job slots when 0.
    pub fn prefetch(&self) -> u16 {
        match self.amqp.prefetch {
            0 => u16::try_from(self.job_slots()).unwrap_or(u16::MAX),
            n => n,
        }
    }
}

/// Hides the passwords of a URL for logs: the one in the user info (`amqp://guest:***@host/`)
/// and a `password=` parameter (`postgres://host/db?password=***`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The last `@`: a password may hold `@`, `/` or `?` that were not escaped.
    let (user, host) = match rest.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo.split(':').next().unwrap_or_default()), host),
        None => (None, rest),
    };
    let host = match host.split_once('?') {
        Some((path, query)) => {
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                    _ => parameter.to_string(),
                })
                .collect();
            format!("{path}?{}", parameters.join("&"))
        }
        None => host.to_string(),
    };
    match user {
        Some(user) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{host}"),
    }
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
        assert_eq!(settings.compile_slots(), settings.worker.concurrency);
        assert_eq!(settings.prefetch(), settings.worker.concurrency as u16 * 2);
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
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=pw&application_name=x"),
            "postgres://u:***@h/db?sslmode=require&password=***&application_name=x"
        );
        assert_eq!(
            redact_url("amqps://u:p@ss/w?rd@host:5671/%2f"),
            "amqps://u:***@host:5671/%2f"
        );
    }

    /// Settings loaded with a secret in each place a secret can be: from the environment, as
    /// a deployment gives them, and from files.
    #[test]
    fn the_debug_of_the_settings_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secret-access-key");
        std::fs::write(&key_file, "file-secret-4\n").unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[amqp]\nurl = \"amqps://user:amqp-secret-1@broker:5671/%2f\"\n\
                 [data]\nsource = \"postgres://user:pg-secret-2@db/facts?password=pg-secret-3\"\n\
                 [storage]\nsecret_access_key = \"s3-secret-5\"\nsecret_access_key_file = \"{}\"\n",
                key_file.display()
            ),
        )
        .unwrap();
        let mut settings = Settings::load(Some(&config)).unwrap();
        assert_eq!(settings.storage.secret_access_key, "file-secret-4", "the file wins");
        let shown = format!("{settings:?} {settings:#?}");
        for secret in ["amqp-secret-1", "pg-secret-2", "pg-secret-3", "file-secret-4"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        settings.storage.secret_access_key = "s3-secret-5".into();
        assert!(!format!("{settings:?}").contains("s3-secret-5"));
        assert!(shown.contains("amqps://user:***@broker:5671/%2f"), "{shown}");
    }

    #[test]
    fn secrets_come_from_files_without_their_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("amqp-url");
        std::fs::write(&url_file, "amqps://u:p@broker:5671/%2f\n").unwrap();
        let source_file = dir.path().join("database-url");
        std::fs::write(&source_file, "postgres://u:p@db/facts\r\n").unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[amqp]\nurl_file = \"{}\"\n[data]\nsource_file = \"{}\"\n",
                url_file.display(),
                source_file.display()
            ),
        )
        .unwrap();
        let settings = Settings::load(Some(&config)).unwrap();
        assert_eq!(settings.amqp.url, "amqps://u:p@broker:5671/%2f");
        assert_eq!(settings.data.source, "postgres://u:p@db/facts");

        let missing = dir.path().join("nowhere");
        std::fs::write(
            &config,
            format!("[storage]\nsecret_access_key_file = \"{}\"\n", missing.display()),
        )
        .unwrap();
        let err = format!("{:#}", Settings::load(Some(&config)).unwrap_err());
        assert!(
            err.contains("storage.secret_access_key_file") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn tls_files_need_an_amqps_url_and_a_key_goes_with_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, "[amqp]\ntls_ca_file = \"ca.pem\"\n").unwrap();
        let err = format!("{:#}", Settings::load(Some(&config)).unwrap_err());
        assert!(err.contains("amqps://") && !err.contains("guest:guest"), "{err}");
        std::fs::write(
            &config,
            "[amqp]\nurl = \"amqps://h/%2f\"\ntls_cert_file = \"client.pem\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Settings::load(Some(&config)).unwrap_err());
        assert!(err.contains("amqp.tls_key_file"), "{err}");
    }
}
