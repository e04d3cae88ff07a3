//! What the integration tests share: running the binary, reading PDFs, building the renderer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tradebulletin::render::Renderer;
use tradebulletin::settings::Settings;
use tradebulletin::typst::{Typst, TypstOptions};

/// Runs the `tradebulletin` binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .args(args)
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .expect("the binary runs")
}

/// Runs the binary and returns its stdout, failing the test if it failed.
pub fn run_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The text of a PDF, as pdftotext gives it (reading order, no layout).
pub fn pdf_text(path: &Path) -> String {
    let output = Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext runs (scripts/setup)");
    assert!(output.status.success(), "pdftotext failed on {}", path.display());
    String::from_utf8(output.stdout).expect("UTF-8 text")
}

/// The text of PDF bytes.
pub fn pdf_bytes_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.pdf");
    std::fs::write(&path, pdf).unwrap();
    pdf_text(&path)
}

/// Collapses runs of white space, so that text broken across lines still matches.
pub fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes a facts CSV with the contract's header and `rows`; returns its path.
pub fn facts_file(dir: &Path, name: &str, rows: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("region,period,partner,flow,product,value,currency\n{rows}"),
    )
    .unwrap();
    path
}

/// The typst runner of the default configuration, with another binary or timeout if given.
pub fn typst(binary: Option<&Path>, timeout: Duration) -> Typst {
    let settings = Settings::load(None).unwrap();
    Typst::new(TypstOptions {
        binary: binary.map_or_else(|| settings.render.typst.clone().into(), Path::to_path_buf),
        latin_fonts: settings.render.latin_fonts.clone().into(),
        cjk_fonts: settings.render.cjk_fonts.clone().into(),
        timeout,
        max_concurrent: 2,
    })
    .expect("fonts are installed (scripts/setup)")
}

pub fn renderer() -> Renderer {
    Renderer::new(typst(None, Duration::from_secs(60)), "tests".into())
}
