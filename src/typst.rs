//! The typst child process: compiles a filled template to PDF, the source on its stdin and the
//! PDF on its stdout, with every input explicit (a root holding only the bulletin library,
//! fonts, creation timestamp, no system fonts, no package downloads), a timeout that kills and
//! reaps the child, and a bound on how many compiles run at once. Typst's diagnostics become
//! an error naming the template and line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::narrative::Language;
use crate::template::{BULLETIN_TEMPLATE, TYPST_LIBRARY};

/// The name of the filled template, as `render --typst-out` writes it and as diagnostics name it.
pub const SOURCE_NAME: &str = "bulletin.typ";
/// typst's niceness (see `lower_priority`).
const TYPST_NICENESS: libc::c_int = 10;
/// How typst names a source read from its stdin.
const STDIN_NAME: &str = "<stdin>";
/// The most of typst's stderr kept for an error message.
const MAX_DIAGNOSTIC_BYTES: usize = 4000;

/// How to run typst.
#[derive(Debug, Clone)]
pub struct TypstOptions {
    /// The typst binary.
    pub binary: PathBuf,
    /// Fonts every bulletin uses (Latin text).
    pub latin_fonts: PathBuf,
    /// Fonts added for Chinese bulletins, and for any bulletin with a character the Latin
    /// fonts lack: Noto Sans CJK SC Core, cut to GB 2312 (scripts/cjk-fonts).
    pub cjk_fonts: PathBuf,
    /// Complete fonts added only for a bulletin with a character neither directory above has
    /// (rare hanzi, Hangul): Noto Sans CJK SC and HanaMin. They are large, and typst reads
    /// every font on its path on every run, so they are not on it otherwise.
    pub cjk_fallback_fonts: PathBuf,
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
    /// What `latin_fonts` and `cjk_fonts` cover, in that order.
    coverage: Arc<[Coverage; 2]>,
    permits: Arc<Semaphore>,
    /// The root every compile shares: the bulletin library and nothing else. Sources come on
    /// stdin and PDFs go to stdout, so a job writes no file.
    root: Arc<tempfile::TempDir>,
}

/// The characters the fonts of one directory have, read from the `coverage.txt` that
/// scripts/cjk-fonts writes there.
#[derive(Debug, Default)]
struct Coverage {
    /// Sorted, disjoint ranges of code points.
    ranges: Vec<(u32, u32)>,
    /// Bit `n` set when ASCII character `n` is in `ranges`: a bulletin is mostly ASCII (its
    /// markup), and every character of every job is looked up.
    ascii: u128,
}

impl Coverage {
    /// The file's ranges; none if it is missing or unreadable, so that the next directory is
    /// always added: slower, but no character goes without a glyph.
    fn load(dir: &Path) -> Coverage {
        let path = dir.join("coverage.txt");
        let Ok(text) = std::fs::read_to_string(&path) else {
            tracing::warn!(
                "no {}: every bulletin gets the next font directory too (scripts/setup writes it)",
                path.display()
            );
            return Coverage::default();
        };
        Coverage::parse(&text)
    }

    fn parse(text: &str) -> Coverage {
        let hex = |s: &str| u32::from_str_radix(s.trim(), 16).ok();
        let mut ranges: Vec<(u32, u32)> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| match l.split_once('-') {
                Some((lo, hi)) => Some((hex(lo)?, hex(hi)?)),
                None => hex(l).map(|cp| (cp, cp)),
            })
            .collect();
        ranges.sort_unstable();
        let mut coverage = Coverage { ranges, ascii: 0 };
        coverage.ascii = (0..128u8)
            .filter(|&b| coverage.in_ranges(u32::from(b)))
            .fold(0, |mask, b| mask | 1 << b);
        coverage
    }

    fn contains(&self, c: char) -> bool {
        let cp = u32::from(c);
        if cp < 128 {
            return self.ascii >> cp & 1 == 1;
        }
        self.in_ranges(cp)
    }

    fn in_ranges(&self, cp: u32) -> bool {
        let i = self.ranges.partition_point(|&(lo, _)| lo <= cp);
        i > 0 && self.ranges[i - 1].1 >= cp
    }
}

impl Typst {
    /// Finds the binary, checks the font directories (made absolute, as typst runs in its own
    /// root), writes that root and prepares the compile slots.
    pub fn new(mut options: TypstOptions) -> anyhow::Result<Typst> {
        // An absolute path lets the standard library start typst with posix_spawn instead of
        // fork, which copies the worker's page tables at every job (the environment is
        // cleared, and a program looked up in a changed PATH needs fork). Not found: left as
        // is, and a compile says so.
        if let Some(found) = on_path(&options.binary) {
            options.binary = found;
        }
        for (key, dir) in [
            ("render.latin_fonts", &mut options.latin_fonts),
            ("render.cjk_fonts", &mut options.cjk_fonts),
            ("render.cjk_fallback_fonts", &mut options.cjk_fallback_fonts),
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
        let coverage = Arc::new([Coverage::load(&options.latin_fonts), Coverage::load(&options.cjk_fonts)]);
        let root = tempfile::Builder::new()
            .prefix("tradebulletin-")
            .tempdir()
            .context("while creating typst's root")?;
        write_library(root.path())?;
        Ok(Typst {
            options: Arc::new(options),
            coverage,
            permits,
            root: Arc::new(root),
        })
    }

    pub fn options(&self) -> &TypstOptions {
        &self.options
    }

    /// The font directories typst gets for `source`: the Latin fonts; the CJK core for a
    /// Chinese bulletin or a character the Latin fonts lack; the complete CJK fonts only for a
    /// character neither has. Typst scans every face on its path on every run (the complete
    /// fonts alone cost ~5 ms), so an English bulletin pays nothing for Chinese support.
    pub fn font_paths(&self, source: &str, language: Language) -> Vec<&Path> {
        let options = &self.options;
        let [latin, cjk] = &*self.coverage;
        let beyond_latin: Vec<char> = source
            .chars()
            .filter(|&c| !c.is_control() && !latin.contains(c))
            .collect();
        let mut paths = vec![options.latin_fonts.as_path()];
        if language == Language::Zh || !beyond_latin.is_empty() {
            paths.push(&options.cjk_fonts);
        }
        if beyond_latin.iter().any(|&c| !cjk.contains(c)) {
            paths.push(&options.cjk_fallback_fonts);
        }
        paths
    }

    /// Compiles `source` (a filled bulletin template) to PDF bytes. `created` is the PDF's
    /// creation time in seconds since the epoch: the same source and time give the same bytes.
    pub async fn compile(&self, source: &str, language: Language, created: i64) -> Result<Vec<u8>, CompileError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("while waiting for a compile slot")?;
        let root = self.root.path();
        if !root.join(TYPST_LIBRARY.0).is_file() {
            // Something cleaned the temporary directory under a long-running worker.
            std::fs::create_dir_all(root).context("while recreating typst's root")?;
            write_library(root)?;
        }
        let mut command = self.command(root, source, language, created);
        let mut child = command.spawn().with_context(|| {
            format!(
                "while starting typst `{}` (set render.typst)",
                self.options.binary.display()
            )
        })?;
        lower_priority(&child);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let run = async {
            let write = async {
                // A typst that exits early closes the pipe; its status tells why.
                let _ = stdin.write_all(source.as_bytes()).await;
                drop(stdin);
            };
            let mut pdf = Vec::new();
            let mut diagnostics = Vec::new();
            let read_diagnostics = async {
                let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut diagnostics).await;
                // The rest is dropped, but read, so that typst never blocks on a full pipe.
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            };
            let (_, pdf_read, _) = tokio::join!(write, stdout.read_to_end(&mut pdf), read_diagnostics);
            let status = child.wait().await;
            (status, pdf_read.map(|_| pdf), diagnostics)
        };
        let (status, pdf, stderr) = match tokio::time::timeout(self.options.timeout, run).await {
            Ok(finished) => finished,
            Err(_) => {
                // Kill and reap, so no process is left behind.
                let _ = child.kill().await;
                return Err(CompileError::Timeout(self.options.timeout));
            }
        };
        let status = status.context("while waiting for typst")?;
        let stderr = String::from_utf8_lossy(&stderr[..stderr.len().min(MAX_DIAGNOSTIC_BYTES)]).into_owned();
        if status.success() {
            return match pdf {
                Ok(pdf) if pdf.starts_with(b"%PDF") => Ok(pdf),
                Ok(_) => Err(CompileError::Crashed {
                    status: status.to_string(),
                    stderr: "typst exited 0 but wrote no PDF".to_string(),
                }),
                Err(e) => Err(CompileError::Crashed {
                    status: status.to_string(),
                    stderr: format!("while reading the PDF from typst: {e}"),
                }),
            };
        }
        if status.code() == Some(1) && stderr.contains("error") {
            return Err(CompileError::Rejected {
                diagnostic: diagnostic(&stderr, root, source),
            });
        }
        Err(CompileError::Crashed {
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }

    /// typst's arguments for a compile of `source` in `root`, all but the input and output:
    /// the ones the worker gives, and the benchmark gives typst alone.
    pub fn compile_args(&self, root: &Path, source: &str, language: Language, created: i64) -> Vec<OsString> {
        let packages = root.join(".packages");
        let mut args: Vec<OsString> = vec!["compile".into(), "--root".into(), root.into()];
        args.extend(["--ignore-system-fonts".into(), "--ignore-embedded-fonts".into()]);
        for dir in self.font_paths(source, language) {
            args.extend(["--font-path".into(), dir.into()]);
        }
        args.extend([
            "--creation-timestamp".into(),
            created.to_string().into(),
            "--diagnostic-format".into(),
            "short".into(),
            "--package-path".into(),
            packages.clone().into(),
            "--package-cache-path".into(),
            packages.into(),
        ]);
        args
    }

    fn command(&self, root: &Path, source: &str, language: Language, created: i64) -> Command {
        let mut command = Command::new(&self.options.binary);
        command
            .args(self.compile_args(root, source, language, created))
            // The source from stdin, the PDF to stdout.
            .args(["-", "-"])
            .current_dir(root)
            // Only PATH, so that no TYPST_* variable of the caller changes the inputs.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// Runs typst below the worker's own CPU priority, so that the worker's short tasks (and the
/// broker's, on a shared host) are not queued behind a compile; typst still gets every cycle
/// nobody else wants. Set after the start rather than in the child, which would need fork.
fn lower_priority(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: setpriority only reads its arguments; a failure leaves the priority as it was.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, pid, TYPST_NICENESS);
        }
    }
}

/// Where a bare program name such as `typst` is on the PATH.
fn on_path(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.components().count() != 1 {
        return std::path::absolute(program).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|found| std::path::absolute(found).ok())
}

/// Writes the static bulletin library into `dir`, beside the sources that import it.
pub fn write_library(dir: &Path) -> anyhow::Result<()> {
    let (lib_name, lib_source) = TYPST_LIBRARY;
    std::fs::write(dir.join(lib_name), lib_source)
        .with_context(|| format!("while writing {lib_name} in {}", dir.display()))
}

/// Writes the filled template and the static library into `dir`, as a compile by hand (and
/// the render benchmark's typst-alone run) needs them.
pub async fn write_sources(dir: &Path, source: &str) -> anyhow::Result<()> {
    tokio::fs::write(dir.join(SOURCE_NAME), source)
        .await
        .with_context(|| format!("while writing {SOURCE_NAME} in {}", dir.display()))?;
    write_library(dir)
}

/// Makes typst's short diagnostics readable: paths relative to the root, and each error's
/// line of the filled template quoted.
fn diagnostic(stderr: &str, root: &Path, source: &str) -> String {
    let root_text = format!("{}/", root.display());
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.replace(&root_text, "").replace(STDIN_NAME, SOURCE_NAME);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn typst_with(dir: &Path, latin: &str, cjk: &str) -> Typst {
        for (name, coverage) in [("latin", latin), ("cjk", cjk), ("fallback", "")] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("a.otf"), b"").unwrap();
            if !coverage.is_empty() {
                std::fs::write(dir.join(name).join("coverage.txt"), coverage).unwrap();
            }
        }
        Typst::new(TypstOptions {
            binary: "typst".into(),
            latin_fonts: dir.join("latin"),
            cjk_fonts: dir.join("cjk"),
            cjk_fallback_fonts: dir.join("fallback"),
            timeout: Duration::from_secs(1),
            max_concurrent: 1,
        })
        .unwrap()
    }

    fn names(paths: Vec<&Path>) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn coverage_ranges() {
        let coverage = Coverage::parse("# comment\n0020-007E\n00B7\n4E00-4E01\n");
        assert!(coverage.contains(' ') && coverage.contains('~') && coverage.contains('·'));
        assert!(coverage.contains('一') && coverage.contains('丁'));
        assert!(!coverage.contains('\u{7F}') && !coverage.contains('丂') && !coverage.contains('é'));
        // ASCII answers from its own mask, which must agree with the ranges.
        let digits = Coverage::parse("0030-0039\n");
        assert!(digits.contains('0') && digits.contains('9'));
        assert!(!digits.contains('/') && !digits.contains(':') && !digits.contains('a'));
        assert!(!Coverage::default().contains('a'));
    }

    #[test]
    fn fonts_follow_the_characters() {
        let dir = tempfile::tempdir().unwrap();
        let typst = typst_with(dir.path(), "0020-007E\n00B7\n", "0020-007E\n00B7\n4E00-9FA5\n");
        let en = Language::En;
        // English with only what the Latin fonts have: exactly the paths of before.
        assert_eq!(names(typst.font_paths("Heilongjiang · 2019\n\ttotal", en)), ["latin"]);
        // A Chinese bulletin always gets the core; a partner named 香港 brings it to English.
        assert_eq!(names(typst.font_paths("2019", Language::Zh)), ["latin", "cjk"]);
        assert_eq!(names(typst.font_paths("Partner: 香港", en)), ["latin", "cjk"]);
        // A character the core lacks brings the complete fonts, in either language.
        assert_eq!(names(typst.font_paths("𠀀", en)), ["latin", "cjk", "fallback"]);
        assert_eq!(
            names(typst.font_paths("黑龙江 𠀀", Language::Zh)),
            ["latin", "cjk", "fallback"]
        );
    }

    #[test]
    fn without_coverage_every_directory_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let typst = typst_with(dir.path(), "", "");
        assert_eq!(
            names(typst.font_paths("total", Language::En)),
            ["latin", "cjk", "fallback"]
        );
    }
}
