//! PDF storage behind `storage.url`. `file://DIR` keeps PDFs in a directory; the job id decides
//! the key `<region-slug>/<period>/<job-id>.pdf`, so a repeated job finds its PDF again.
//! Writes go to a temporary name and are renamed into place, create-only: a second writer of
//! the same key keeps the first PDF.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// A stored PDF: where it is, its size and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPdf {
    pub location: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Where PDFs go.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A directory on a local or mounted file system.
    File { root: PathBuf },
}

impl Storage {
    /// Opens `storage.url`: `file://DIR`, relative to the working directory when not absolute.
    pub fn open(url: &str) -> anyhow::Result<Storage> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                bail!("storage.url `{url}` names no directory");
            }
            let root = std::path::absolute(path).with_context(|| format!("while resolving storage.url `{url}`"))?;
            return Ok(Storage::File { root });
        }
        if url.starts_with("s3://") {
            bail!("storage.url `{url}`: s3:// storage is not built yet; use file://DIR");
        }
        bail!("storage.url `{url}` is not supported: use file://DIR")
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
        }
    }

    /// Stores `pdf` under `key` unless a PDF is there already; returns what is stored.
    pub async fn put(&self, key: &str, pdf: &[u8]) -> anyhow::Result<StoredPdf> {
        match self {
            Storage::File { root } => {
                let path = root.join(key);
                let dir = path.parent().expect("a key has a directory");
                tokio::fs::create_dir_all(dir)
                    .await
                    .with_context(|| format!("while creating {}", dir.display()))?;
                let temporary = dir.join(format!(".{}.{}.tmp", uuid::Uuid::new_v4(), std::process::id()));
                let written = async {
                    tokio::fs::write(&temporary, pdf).await?;
                    tokio::fs::File::open(&temporary).await?.sync_all().await?;
                    // A hard link fails if the name exists: create-only, unlike rename.
                    match tokio::fs::hard_link(&temporary, &path).await {
                        Ok(()) => Ok(true),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(e),
                    }
                }
                .await;
                let _ = tokio::fs::remove_file(&temporary).await;
                let created = written.with_context(|| format!("while writing {}", path.display()))?;
                if created {
                    Ok(describe(file_url(&path), pdf))
                } else {
                    self.find(key).await?.context("the PDF vanished after it was found")
                }
            }
        }
    }

    /// Reads back a stored PDF by its location.
    pub async fn fetch(location: &str) -> anyhow::Result<Vec<u8>> {
        let Some(path) = location.strip_prefix("file://") else {
            bail!("cannot fetch `{location}`: only file:// locations are supported yet");
        };
        tokio::fs::read(Path::new(path))
            .await
            .with_context(|| format!("while reading {location}"))
    }
}

fn describe(location: String, pdf: &[u8]) -> StoredPdf {
    StoredPdf {
        location,
        bytes: pdf.len() as u64,
        sha256: sha256_hex(pdf),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
        let storage = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let key = Storage::key("jilin", "2020", "job");
        assert_eq!(storage.find(&key).await.unwrap(), None);
        let first = storage.put(&key, b"%PDF-first").await.unwrap();
        let second = storage.put(&key, b"%PDF-second").await.unwrap();
        assert_eq!(first, second);
        assert_eq!(Storage::fetch(&first.location).await.unwrap(), b"%PDF-first");
        assert_eq!(first.sha256, sha256_hex(b"%PDF-first"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("jilin/2020")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files are left");
    }
}
