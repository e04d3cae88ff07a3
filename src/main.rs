//! The `tradebulletin` binary: parses arguments and wires the library together.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use tokio_util::sync::CancellationToken;
use tradebulletin::client;
use tradebulletin::job::{ErrorCode, JobError};
use tradebulletin::narrative::Language;
use tradebulletin::period::Period;
use tradebulletin::region::Region;
use tradebulletin::render::{self, Renderer};
use tradebulletin::settings::Settings;
use tradebulletin::store::Store;
use tradebulletin::summary;
use tradebulletin::telemetry;
use tradebulletin::typst::{Typst, TypstOptions};
use tradebulletin::worker;

/// Turns trade statistics into published bulletins.
#[derive(Debug, Parser)]
#[command(name = "tradebulletin", version, about)]
struct Cli {
    /// A configuration file layered over the defaults (config/default.toml).
    #[arg(long, global = true, env = "TRADEBULLETIN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Makes one bulletin locally, with no broker.
    Render(RenderArgs),
    /// Prints the computed summary of a region's trade in a period.
    Summary(SummaryArgs),
    /// Consumes requests until SIGTERM or SIGINT, then drains and exits 0.
    Worker,
    /// Publishes one request; with --wait, waits for its result and prints it
    /// (exit 0 succeeded, 1 failed, 2 timed out).
    Enqueue(EnqueueArgs),
    /// Prints each result as one JSON line as it arrives.
    Subscribe(SubscribeArgs),
    /// Validates facts files and loads them into PostgreSQL, all or nothing.
    Import(ImportArgs),
    /// Asks a running worker's /healthz (on http.listen): exit 0 when healthy, 1 otherwise.
    Healthcheck,
}

#[derive(Debug, clap::Args)]
struct EnqueueArgs {
    /// As in `render`; checked by the worker, not here.
    #[arg(long)]
    region: String,
    #[arg(long)]
    period: String,
    #[arg(long, default_value = "en")]
    lang: String,
    /// The job id (1-128 printable characters); a new UUID if not given.
    #[arg(long)]
    job_id: Option<String>,
    /// Wait for the result and print it.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 120, requires = "wait")]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// CSV facts files (the columns of the contract).
    #[arg(required = true, value_name = "FILE.csv")]
    files: Vec<PathBuf>,
    /// The database; data.source when not given.
    #[arg(long, value_name = "URL")]
    into: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SubscribeArgs {
    /// The binding key: `bulletin.#` for all results, `bulletin.succeeded.#`,
    /// `bulletin.*.heilongjiang.#`...
    #[arg(long, default_value = "bulletin.#")]
    binding: String,
    /// Also fetch each succeeded result's PDF into this directory, checking its sha256.
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
    /// Stop after this many results.
    #[arg(long)]
    count: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// English or Chinese name or GB/T 2260 code: Heilongjiang, 黑龙江省, 230000.
    #[arg(long)]
    region: String,
    /// 2019, 2019-H1, 2019-Q3, 2019-06 or 2019-01..07.
    #[arg(long)]
    period: String,
    /// A CSV facts file to use instead of the configured data source.
    #[arg(long, value_name = "FILE")]
    facts: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    #[command(flatten)]
    target: Target,
    /// The bulletin's language.
    #[arg(long, default_value = "en", value_parser = parse_language)]
    lang: Language,
    /// Where to write the PDF.
    #[arg(long, value_name = "FILE.pdf")]
    out: PathBuf,
    /// Also write the Typst source (and the library it imports, beside it).
    #[arg(long, value_name = "FILE.typ")]
    typst_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SummaryArgs {
    #[command(flatten)]
    target: Target,
    /// `text` states the figures as a bulletin does; `json` gives the full structure.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Text,
}

fn parse_language(text: &str) -> Result<Language, String> {
    Language::parse(text).ok_or_else(|| format!("`{text}` is not a language: use en or zh"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log.format, &settings.log.level);
    match cli.command {
        Command::Summary(args) => current_thread()?.block_on(summary_command(&settings, args)),
        Command::Import(args) => current_thread()?.block_on(import_command(&settings, args)),
        Command::Render(args) => current_thread()?.block_on(render_command(&settings, args)),
        Command::Worker => tokio::runtime::Runtime::new()?.block_on(worker_command(settings)),
        Command::Enqueue(args) => current_thread()?.block_on(enqueue_command(&settings, args)),
        Command::Subscribe(args) => current_thread()?.block_on(subscribe_command(&settings, args)),
        Command::Healthcheck => current_thread()?.block_on(async {
            let status = tradebulletin::http::probe(&settings.http.listen, "/healthz").await?;
            println!("/healthz: {status}");
            Ok(if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
    }
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn worker_command(settings: Settings) -> anyhow::Result<ExitCode> {
    let shutdown = worker::shutdown_on_signals()?;
    let store = Store::open(&settings.data).await?;
    let renderer = Renderer::new(typst_runner(&settings)?, settings.render.publisher.clone());
    tracing::info!(
        broker = %tradebulletin::settings::redact_url(&settings.amqp.url),
        facts = %store.describe(),
        storage = %settings.storage.url,
        "worker starting"
    );
    let metrics = tradebulletin::http::install_metrics()?;
    let health = tradebulletin::http::Health::new();
    let listener = tokio::net::TcpListener::bind(&settings.http.listen)
        .await
        .with_context(|| format!("while listening on http.listen {}", settings.http.listen))?;
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(tradebulletin::http::serve(
        listener,
        health.clone(),
        metrics,
        http_stop.clone(),
    ));
    let worker = Arc::new(worker::Worker::new(settings, store, renderer, health)?);
    worker.run(shutdown).await?;
    http_stop.cancel();
    let _ = http.await;
    Ok(ExitCode::SUCCESS)
}

async fn enqueue_command(settings: &Settings, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let request = client::Enqueue {
        job_id: args.job_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        region: args.region,
        period: args.period,
        language: args.lang,
    };
    let wait = args.wait.then(|| Duration::from_secs(args.timeout));
    let waited = client::enqueue(settings, &request, wait).await?;
    eprintln!("enqueued job {}", request.job_id);
    match waited {
        None => Ok(ExitCode::SUCCESS),
        Some(client::Waited::Result { body, succeeded }) => {
            print_stdout(&(String::from_utf8_lossy(&body).into_owned() + "\n"))?;
            Ok(if succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(client::Waited::TimedOut) => {
            eprintln!("no result within {} s", args.timeout);
            Ok(ExitCode::from(2))
        }
    }
}

async fn import_command(settings: &Settings, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let url = args.into.as_deref().unwrap_or(&settings.data.source);
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        anyhow::bail!("import loads into PostgreSQL: give --into postgres://... or set data.source to one");
    }
    let started = std::time::Instant::now();
    let facts = tradebulletin::facts::FactSet::from_csv_paths(&args.files)?;
    let validated = started.elapsed();
    let db = tradebulletin::pgstore::PgStore::connect(url, settings.data.ca_file()).await?;
    db.migrate().await?;
    let report = db.import(&facts).await?;
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "imported {} facts from {} file(s): {} inserted or changed; validated in {:.2} s, loaded in {:.2} s ({:.0} rows/s)",
        report.rows,
        args.files.len(),
        report.changed,
        validated.as_secs_f64(),
        seconds,
        report.rows as f64 / seconds
    );
    Ok(ExitCode::SUCCESS)
}

async fn subscribe_command(settings: &Settings, args: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = worker::shutdown_on_signals()?;
    let stop = shutdown.cancelled_owned();
    client::subscribe(
        settings,
        &args.binding,
        args.count,
        args.download.as_deref(),
        stop,
        |body| print_stdout(&(String::from_utf8_lossy(body).into_owned() + "\n")),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the facts and computes the summary the target asks for; errors carry the
/// contract's error code.
async fn summarise(settings: &Settings, target: &Target) -> Result<summary::Summary, JobError> {
    let region =
        Region::parse(&target.region).map_err(|e| JobError::permanent(ErrorCode::UnknownRegion, e.to_string()))?;
    let period =
        Period::parse(&target.period).map_err(|e| JobError::permanent(ErrorCode::InvalidRequest, e.to_string()))?;
    let store = match &target.facts {
        Some(path) => Store::from_facts(tradebulletin::facts::FactSet::from_csv_path(path)?),
        None => Store::open(&settings.data)
            .await
            .map_err(|e| JobError::permanent(ErrorCode::Internal, format!("{e:#}")))?,
    };
    let facts = store.facts_for(region, period).await?;
    Ok(summary::summarise(&facts, region, period)?)
}

async fn summary_command(settings: &Settings, args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let summary = summarise(settings, &args.target).await?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&summary)? + "\n",
        Format::Text => tradebulletin::template::Templates::new().summary_text(&summary, Language::En)?,
    };
    print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The typst runner the settings describe.
fn typst_runner(settings: &Settings) -> anyhow::Result<Typst> {
    Typst::new(TypstOptions {
        binary: settings.render.typst.clone().into(),
        latin_fonts: settings.render.latin_fonts.clone().into(),
        cjk_fonts: settings.render.cjk_fonts.clone().into(),
        cjk_fallback_fonts: settings.render.cjk_fallback_fonts.clone().into(),
        timeout: Duration::from_secs(settings.render.timeout_secs),
        max_concurrent: settings.compile_slots(),
    })
}

async fn render_command(settings: &Settings, args: RenderArgs) -> anyhow::Result<ExitCode> {
    let summary = summarise(settings, &args.target).await?;
    let renderer = Renderer::new(typst_runner(settings)?, settings.render.publisher.clone());
    let bulletin = renderer
        .render(&summary, args.lang, render::issue_date())
        .await
        .map_err(JobError::from)?;
    write_file(&args.out, &bulletin.pdf)?;
    if let Some(typst_out) = &args.typst_out {
        write_file(typst_out, bulletin.source.as_bytes())?;
        let dir = typst_out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The library the source imports goes beside it, so `typst compile` works by hand.
        tradebulletin::typst::write_library(dir)?;
    }
    eprintln!("wrote {} ({} bytes)", args.out.display(), bulletin.pdf.len());
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("while writing {}", path.display()))
}
