//! The typst child process: compiles a filled template to PDF in a fresh root directory per
//! job, with every input explicit (root, fonts, creation timestamp, no system fonts, no
//! package downloads), a timeout that kills and reaps the child, and a bound on how many
//! compiles run at once. Typst's diagnostics become an error naming the template and line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::narrative::Language;
use crate::template::{BULLETIN_TEMPLATE, TYPST_LIBRARY};

/// The name of the filled template inside the job's root.
pub const SOURCE_NAME: &str = "bulletin.typ";
/// The most of typst's stderr kept for an error message.
const MAX_DIAGNOSTIC_BYTES: usize = 4000;

/// How to run typst.
#[derive(Debug, Clone)]
pub struct TypstOptions {
    /// The typst binary.
    pub binary: PathBuf,
    /// Fonts every bulletin uses (Latin text).
    pub latin_fonts: PathBuf,
    /// Fonts added for Chinese bulletins.
    pub cjk_fonts: PathBuf,
    pub timeout: Duration,
    /// How many compiles may run at once.
    pub max_concurrent: usize,
}

/// Why a compile failed; the worker decides on retry by the variant.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Typst rejected the source: a template error, permanent.
    #[error("typst could not compile the bulletin (from template {BULLETIN_TEMPLATE}): {diagnostic}")]
    Rejected { diagnostic: String },
    /// The compile ran past the timeout and was killed.
    #[error("typst did not finish within {0:?} and was stopped")]
    Timeout(Duration),
    /// Typst died by a signal or produced no PDF: may pass on a retry.
    #[error("typst failed unexpectedly ({status}): {stderr}")]
    Crashed { status: String, stderr: String },
    /// Typst could not be started or its files written.
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
}

/// Runs typst compiles, at most `max_concurrent` at once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Typst {
    options: Arc<TypstOptions>,
    permits: Arc<Semaphore>,
}

impl Typst {
    /// Checks the font directories (made absolute, as typst runs in the job's root) and
    /// prepares the compile slots.
    pub fn new(mut options: TypstOptions) -> anyhow::Result<Typst> {
        for (key, dir) in [
            ("render.latin_fonts", &mut options.latin_fonts),
            ("render.cjk_fonts", &mut options.cjk_fonts),
        ] {
            *dir = std::path::absolute(&*dir).with_context(|| format!("while resolving {key}"))?;
            let has_fonts = std::fs::read_dir(&*dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().to_ascii_lowercase();
                    [".ttf", ".otf", ".ttc", ".otc"].iter().any(|ext| name.ends_with(ext))
                })
            });
            if !has_fonts {
                anyhow::bail!("{key}: no fonts in {} (scripts/setup installs them)", dir.display());
            }
        }
        let permits = Arc::new(Semaphore::new(options.max_concurrent.max(1)));
        Ok(Typst {
            options: Arc::new(options),
            permits,
        })
    }

    pub fn options(&self) -> &TypstOptions {
        &self.options
    }

    /// Compiles `source` (a filled bulletin template) to PDF bytes. `created` is the PDF's
    /// creation time in seconds since the epoch: the same source and time give the same bytes.
    pub async fn compile(&self, source: &str, language: Language, created: i64) -> Result<Vec<u8>, CompileError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("while waiting for a compile slot")?;
        let root = tempfile::Builder::new()
            .prefix("tradebulletin-")
            .tempdir()
            .context("while creating the job's typst root")?;
        write_sources(root.path(), source).await?;
        let output = root.path().join("bulletin.pdf");
        let mut command = self.command(root.path(), language, created, &output);
        let mut child = command.spawn().with_context(|| {
            format!(
                "while starting typst `{}` (set render.typst)",
                self.options.binary.display()
            )
        })?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let reader = tokio::spawn(async move {
            let mut buffer = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buffer).await;
            buffer
        });
        let status = tokio::select! {
            status = child.wait() => status.context("while waiting for typst")?,
            () = tokio::time::sleep(self.options.timeout) => {
                // Kill and reap, so no process is left behind.
                let _ = child.kill().await;
                reader.abort();
                return Err(CompileError::Timeout(self.options.timeout));
            }
        };
        let stderr = reader.await.unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr[..stderr.len().min(MAX_DIAGNOSTIC_BYTES)]).into_owned();
        if status.success() {
            return tokio::fs::read(&output).await.map_err(|e| CompileError::Crashed {
                status: status.to_string(),
                stderr: format!("typst exited 0 but wrote no PDF: {e}"),
            });
        }
        if status.code() == Some(1) && stderr.contains("error") {
            return Err(CompileError::Rejected {
                diagnostic: diagnostic(&stderr, root.path(), source),
            });
        }
        Err(CompileError::Crashed {
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }

    fn command(&self, root: &Path, language: Language, created: i64, output: &Path) -> Command {
        let options = &self.options;
        let packages = root.join(".packages");
        let mut command = Command::new(&options.binary);
        command
            .arg("compile")
            .arg("--root")
            .arg(root)
            .arg("--ignore-system-fonts")
            .arg("--ignore-embedded-fonts")
            .arg("--font-path")
            .arg(&options.latin_fonts);
        if language == Language::Zh {
            command.arg("--font-path").arg(&options.cjk_fonts);
        }
        command
            .arg("--creation-timestamp")
            .arg(created.to_string())
            .arg("--diagnostic-format")
            .arg("short")
            .arg("--package-path")
            .arg(&packages)
            .arg("--package-cache-path")
            .arg(&packages)
            .arg(root.join(SOURCE_NAME))
            .arg(output)
            .current_dir(root)
            // Only PATH, so that no TYPST_* variable of the caller changes the inputs.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// Writes the filled template and the static library into `dir`, as typst compiles them.
pub async fn write_sources(dir: &Path, source: &str) -> anyhow::Result<()> {
    let (lib_name, lib_source) = TYPST_LIBRARY;
    tokio::fs::write(dir.join(SOURCE_NAME), source)
        .await
        .with_context(|| format!("while writing {SOURCE_NAME} in {}", dir.display()))?;
    tokio::fs::write(dir.join(lib_name), lib_source)
        .await
        .with_context(|| format!("while writing {lib_name} in {}", dir.display()))?;
    Ok(())
}

/// Makes typst's short diagnostics readable: paths relative to the root, and each error's
/// line of the filled template quoted.
fn diagnostic(stderr: &str, root: &Path, source: &str) -> String {
    let root_text = format!("{}/", root.display());
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.replace(&root_text, "");
        let quoted = line
            .strip_prefix(&format!("{SOURCE_NAME}:"))
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| lines.get(n.wrapping_sub(1)))
            .map(|text| format!(" (generated line: `{}`)", crate::facts::clip(text.trim())));
        out.push(format!("{line}{}", quoted.unwrap_or_default()));
        if out.len() >= 5 {
            break;
        }
    }
    out.join("; ")
}
