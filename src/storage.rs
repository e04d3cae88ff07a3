//! PDF storage behind `storage.url`: `file://DIR` keeps PDFs in a directory, `s3://bucket/prefix`
//! in an S3-compatible object store (AWS, MinIO, Garage) through the `object_store` crate.
//! The job id decides the key `<region-slug>/<period>/<job-id>.pdf`, so a repeated job finds
//! its PDF again. Writes are create-only: a second writer of the same key keeps the first PDF
//! (on object stores by a conditional put where the store honours it, and a look first).
//! Objects carry content type `application/pdf` and the job id and sha256 as metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, Certificate, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
};
use sha2::{Digest, Sha256};

use crate::settings::StorageSettings;

/// A stored PDF: where it is, its size and its SHA-256, and for object stores a presigned URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPdf {
    pub location: String,
    pub bytes: u64,
    pub sha256: String,
    /// A presigned HTTPS (or HTTP) URL that downloads the PDF without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When `url` stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_expires_at: Option<String>,
}

/// Where PDFs go.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A directory on a local or mounted file system.
    File { root: PathBuf },
    /// A bucket (and key prefix) in an S3-compatible store.
    S3 {
        store: Arc<AmazonS3>,
        bucket: String,
        prefix: String,
        presign: Option<Duration>,
    },
}

impl Storage {
    /// Opens `storage.url`: `file://DIR` (relative to the working directory when not absolute)
    /// or `s3://bucket/prefix` with the endpoint, region, addressing and credentials of
    /// `settings`.
    pub fn open(settings: &StorageSettings) -> anyhow::Result<Storage> {
        let url = settings.url.as_str();
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                bail!("storage.url `{url}` names no directory");
            }
            let root = std::path::absolute(path).with_context(|| format!("while resolving storage.url `{url}`"))?;
            return Ok(Storage::File { root });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("storage.url `{url}` names no bucket: use s3://bucket/prefix");
            }
            let store = s3_store(settings, bucket)?;
            return Ok(Storage::S3 {
                store: Arc::new(store),
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                presign: (settings.presign_secs > 0).then(|| Duration::from_secs(settings.presign_secs)),
            });
        }
        bail!("storage.url `{url}` is not supported: use file://DIR or s3://bucket/prefix")
    }

    /// The key of a job's PDF: `<region-slug>/<period>/<job-id>.pdf`, the job id made safe
    /// as a file name.
    pub fn key(region_slug: &str, period: &str, job_id: &str) -> String {
        format!("{region_slug}/{period}/{}.pdf", safe_name(job_id))
    }

    /// The PDF stored under `key`, if there is one.
    pub async fn find(&self, key: &str) -> anyhow::Result<Option<StoredPdf>> {
        match self {
            Storage::File { root } => {
                let path = root.join(key);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(describe(file_url(&path), &bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("while reading {}", path.display())),
                }
            }
            Storage::S3 { store, .. } => {
                let path = self.object_path(key);
                match store.get(&path).await {
                    Ok(result) => {
                        let bytes = result
                            .bytes()
                            .await
                            .with_context(|| format!("while reading {}", self.location(key)))?;
                        Ok(Some(self.describe_object(key, &bytes).await?))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => {
                        Err(anyhow::Error::new(e)).with_context(|| format!("while reading {}", self.location(key)))
                    }
                }
            }
        }
    }

    /// Stores `pdf` under `key` unless a PDF is there already; returns what is stored.
    pub async fn put(&self, key: &str, pdf: &[u8], job_id: &str) -> anyhow::Result<StoredPdf> {
        match self {
            Storage::File { root } => {
                let path = root.join(key);
                let bytes = pdf.to_vec();
                // One trip to the blocking pool for the whole write, not one per call.
                let stored = tokio::task::spawn_blocking(move || write_new_file(&path, &bytes))
                    .await
                    .context("the file writer panicked")??;
                match stored {
                    Some(stored) => Ok(stored),
                    None => self.find(key).await?.context("the PDF vanished after it was found"),
                }
            }
            Storage::S3 { store, .. } => {
                // Some stores (Garage) ignore `If-None-Match: *` and overwrite: look first, so
                // that a later writer keeps the PDF there. Two writers at the same instant can
                // still both write; their PDFs are the same bytes (same request, same day).
                if let Some(existing) = self.find(key).await? {
                    return Ok(existing);
                }
                let mut attributes = Attributes::new();
                attributes.insert(Attribute::ContentType, "application/pdf".into());
                attributes.insert(Attribute::Metadata("job-id".into()), job_id.to_string().into());
                attributes.insert(Attribute::Metadata("sha256".into()), sha256_hex(pdf).into());
                let options = PutOptions {
                    mode: PutMode::Create,
                    attributes,
                    ..PutOptions::default()
                };
                let path = self.object_path(key);
                match store.put_opts(&path, pdf.to_vec().into(), options).await {
                    Ok(_) => self.describe_object(key, pdf).await,
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        self.find(key).await?.context("the PDF vanished after it was found")
                    }
                    Err(e) => {
                        Err(anyhow::Error::new(e)).with_context(|| format!("while writing {}", self.location(key)))
                    }
                }
            }
        }
    }

    /// The object key: the prefix and the key as they are (keys are already safe names).
    fn object_key(&self, key: &str) -> String {
        match self {
            Storage::S3 { prefix, .. } if !prefix.is_empty() => format!("{prefix}/{key}"),
            _ => key.to_string(),
        }
    }

    fn object_path(&self, key: &str) -> ObjectPath {
        object_path(&self.object_key(key))
    }

    fn location(&self, key: &str) -> String {
        match self {
            Storage::File { root } => file_url(&root.join(key)),
            Storage::S3 { bucket, .. } => format!("s3://{bucket}/{}", self.object_key(key)),
        }
    }

    async fn describe_object(&self, key: &str, pdf: &[u8]) -> anyhow::Result<StoredPdf> {
        let mut stored = describe(self.location(key), pdf);
        if let Storage::S3 {
            store,
            presign: Some(expiry),
            ..
        } = self
        {
            let url = store
                .signed_url(axum::http::Method::GET, &self.object_path(key), *expiry)
                .await
                .context("while presigning the PDF's URL")?;
            stored.url = Some(url.to_string());
            let expires = chrono::Utc::now() + chrono::Duration::from_std(*expiry).unwrap_or_default();
            stored.url_expires_at = Some(expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        Ok(stored)
    }

    /// Reads back a stored PDF by its location: a `file://` path, or an `s3://` object in the
    /// store `settings` describe (its credentials).
    pub async fn fetch(location: &str, settings: &StorageSettings) -> anyhow::Result<Vec<u8>> {
        if let Some(path) = location.strip_prefix("file://") {
            return tokio::fs::read(Path::new(path))
                .await
                .with_context(|| format!("while reading {location}"));
        }
        let Some(rest) = location.strip_prefix("s3://") else {
            bail!("cannot fetch `{location}`: not a file:// or s3:// location");
        };
        let (bucket, key) = rest
            .split_once('/')
            .with_context(|| format!("`{location}` names no object"))?;
        let store = s3_store(settings, bucket)?;
        let result = store
            .get(&object_path(key))
            .await
            .with_context(|| format!("while reading {location}"))?;
        Ok(result
            .bytes()
            .await
            .with_context(|| format!("while reading {location}"))?
            .to_vec())
    }
}

/// An S3 client for `bucket` with the configured endpoint, region, addressing, credentials
/// (from the settings, else the AWS environment variables) and extra CA (`storage.tls_ca_file`).
fn s3_store(settings: &StorageSettings, bucket: &str) -> anyhow::Result<AmazonS3> {
    // Few quick retries here: a longer outage is the worker's to retry, job by job.
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    };
    let mut builder = AmazonS3Builder::from_env();
    if !settings.tls_ca_file.is_empty() {
        builder = builder.with_client_options(client_options_with_ca(&settings.tls_ca_file)?);
    }
    builder = builder
        .with_retry(retry)
        .with_bucket_name(bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(!settings.path_style);
    if !settings.endpoint.is_empty() {
        builder = builder
            .with_endpoint(&settings.endpoint)
            .with_allow_http(settings.endpoint.starts_with("http://"));
    }
    if !settings.access_key_id.is_empty() {
        builder = builder.with_access_key_id(&settings.access_key_id);
    }
    if !settings.secret_access_key.is_empty() {
        builder = builder.with_secret_access_key(&settings.secret_access_key);
    }
    builder
        .build()
        .with_context(|| format!("while configuring the S3 store for bucket {bucket}"))
}

/// The HTTP client options of the AWS environment variables (as `AmazonS3Builder::from_env`
/// sets them), trusting the CA certificates of `ca_file` besides the system's roots.
fn client_options_with_ca(ca_file: &str) -> anyhow::Result<ClientOptions> {
    let ca = crate::tls::read_certificates(Path::new(ca_file), "storage.tls_ca_file")?;
    let mut options = ClientOptions::new();
    for (name, value) in std::env::vars() {
        if let Some(AmazonS3ConfigKey::Client(key)) = name
            .strip_prefix("AWS_")
            .and_then(|_| name.to_ascii_lowercase().parse().ok())
        {
            options = options.with_config(key, value);
        }
    }
    for certificate in &ca.certificates {
        let certificate = Certificate::from_der(certificate)
            .with_context(|| format!("while reading storage.tls_ca_file {ca_file}"))?;
        options = options.with_root_certificate(certificate);
    }
    Ok(options)
}

/// An object path taken as written: our keys are percent-escaped already, and `Path::from`
/// would escape the `%` again.
fn object_path(key: &str) -> ObjectPath {
    ObjectPath::parse(key).unwrap_or_else(|_| ObjectPath::from(key))
}

fn describe(location: String, pdf: &[u8]) -> StoredPdf {
    StoredPdf {
        location,
        bytes: pdf.len() as u64,
        sha256: sha256_hex(pdf),
        url: None,
        url_expires_at: None,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `pdf` at `path` durably (flushed to disk before it gets its name) unless a file is
/// there already: `None` then. Create-only through a hard link, which fails if the name
/// exists, unlike a rename.
fn write_new_file(path: &Path, pdf: &[u8]) -> anyhow::Result<Option<StoredPdf>> {
    use std::io::Write;
    let dir = path.parent().expect("a key has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let temporary = dir.join(format!(".{}.{}.tmp", uuid::Uuid::new_v4(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(pdf)?;
        file.sync_data()?;
        match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&temporary);
    let created = written.with_context(|| format!("while writing {}", path.display()))?;
    Ok(created.then(|| describe(file_url(path), pdf)))
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Makes a job id safe as one file name: letters, digits, `-`, `_` and `.` stay; anything else
/// becomes `%XX`; a name of dots alone is escaped too.
pub fn safe_name(job_id: &str) -> String {
    let mut out = String::with_capacity(job_id.len());
    for byte in job_id.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    if out.bytes().all(|b| b == b'.') {
        out = out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_settings(dir: &Path) -> StorageSettings {
        let mut settings = crate::settings::Settings::load(None).unwrap().storage;
        settings.url = format!("file://{}", dir.display());
        settings
    }

    #[test]
    fn job_ids_cannot_leave_their_directory() {
        assert_eq!(safe_name("job-1_a.b"), "job-1_a.b");
        assert_eq!(safe_name("../../etc/passwd"), "..%2F..%2Fetc%2Fpasswd");
        assert_eq!(safe_name(".."), "%2E%2E");
        assert_eq!(safe_name("a b/黑"), "a%20b%2F%E9%BB%91");
        assert_eq!(
            Storage::key("heilongjiang", "2019-H1", "x/y"),
            "heilongjiang/2019-H1/x%2Fy.pdf"
        );
    }

    #[tokio::test]
    async fn a_second_writer_keeps_the_first_pdf() {
        let dir = tempfile::tempdir().unwrap();
        let settings = file_settings(dir.path());
        let storage = Storage::open(&settings).unwrap();
        let key = Storage::key("jilin", "2020", "job");
        assert_eq!(storage.find(&key).await.unwrap(), None);
        let first = storage.put(&key, b"%PDF-first", "job").await.unwrap();
        let second = storage.put(&key, b"%PDF-second", "job").await.unwrap();
        assert_eq!(first, second);
        assert_eq!(Storage::fetch(&first.location, &settings).await.unwrap(), b"%PDF-first");
        assert_eq!(first.sha256, sha256_hex(b"%PDF-first"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("jilin/2020")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files are left");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let mut settings = file_settings(Path::new("/tmp"));
        for (url, needle) in [
            ("ftp://x", "not supported"),
            ("s3://", "names no bucket"),
            ("file://", "no directory"),
        ] {
            settings.url = url.to_string();
            let err = Storage::open(&settings).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
