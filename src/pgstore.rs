//! PostgreSQL as the facts store (`data.source = postgres://...`): a connection pool, the
//! schema in versioned migrations (`migrations/`, embedded), bulk import with COPY in one
//! transaction, and the query that fetches only what one summary needs. Connections use TLS
//! as the URL's `sslmode` says, with libpq's meanings (rustls, through tokio-postgres-rustls).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::Type;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::facts::{Currency, Fact, FactSet, Flow, SeriesKey};
use crate::period::Period;
use crate::region::Region;
use crate::settings::redact_url;
use crate::tls::{ServerCheck, read_certificates};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A pool of connections to the facts database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Facts in the files.
    pub rows: u64,
    /// Facts inserted or changed (0 when the same files are imported again).
    pub changed: u64,
    pub elapsed: Duration,
}

/// libpq's `sslmode`s. tokio-postgres knows only the first three, so the URL's `sslmode` is
/// read here and the server's certificate checked by our own rustls configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, the certificate unchecked (libpq's default; `allow` too).
    Prefer,
    /// TLS, the certificate unchecked, or checked as with `VerifyCa` when a CA file is given.
    Require,
    /// TLS, and the certificate is signed by a trusted CA.
    VerifyCa,
    /// TLS, the certificate is signed by a trusted CA and names the host.
    VerifyFull,
}

impl PgSslMode {
    fn parse(text: &str) -> anyhow::Result<PgSslMode> {
        Ok(match text {
            "disable" => PgSslMode::Disable,
            "allow" | "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            other => bail!("sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"),
        })
    }
}

/// A database URL taken apart: the tokio-postgres configuration and how it uses TLS.
#[derive(Debug)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub ssl_mode: PgSslMode,
    /// The URL's `sslrootcert`, else the `data.tls_ca_file` given; `None` for the system's roots.
    pub root_cert: Option<PathBuf>,
}

impl PgTarget {
    /// Parses a `postgres://` URL, taking `sslmode` and `sslrootcert` out of it (`sslrootcert`
    /// wins over `ca_file`; `sslrootcert=system` means the system's roots).
    pub fn parse(url: &str, ca_file: Option<&Path>) -> anyhow::Result<PgTarget> {
        let invalid = || format!("data.source `{}` is not a valid postgres:// URL", redact_url(url));
        let mut ssl_mode = PgSslMode::Prefer;
        let mut root_cert = ca_file.map(Path::to_path_buf);
        let mut rest = url.to_string();
        if let Some((base, query)) = url.split_once('?') {
            let mut kept = Vec::new();
            for parameter in query.split('&') {
                let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .with_context(invalid)?;
                match name {
                    "sslmode" => ssl_mode = PgSslMode::parse(&value).with_context(invalid)?,
                    "sslrootcert" if value == "system" => root_cert = None,
                    "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                    _ => kept.push(parameter),
                }
            }
            rest = if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
        }
        let mut config: tokio_postgres::Config = rest.parse().with_context(invalid)?;
        config.ssl_mode(match ssl_mode {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        Ok(PgTarget {
            config,
            ssl_mode,
            root_cert,
        })
    }

    /// How the server's certificate is checked.
    pub fn server_check(&self) -> ServerCheck {
        match self.ssl_mode {
            PgSslMode::Disable | PgSslMode::Prefer => ServerCheck::None,
            // As libpq: `require` with a CA file checks the chain.
            PgSslMode::Require if self.root_cert.is_some() => ServerCheck::Chain,
            PgSslMode::Require => ServerCheck::None,
            PgSslMode::VerifyCa => ServerCheck::Chain,
            PgSslMode::VerifyFull => ServerCheck::Full,
        }
    }

    /// The TLS connector: the CA file is read only when certificates are checked.
    fn connector(&self) -> anyhow::Result<MakeRustlsConnect> {
        let check = self.server_check();
        let ca = match (&self.root_cert, check) {
            (Some(path), ServerCheck::Chain | ServerCheck::Full) => Some(read_certificates(
                path,
                "the database CA file (sslrootcert, data.tls_ca_file)",
            )?),
            _ => None,
        };
        Ok(MakeRustlsConnect::new(crate::tls::client_config(check, ca.as_ref())?))
    }

    /// Describes the TLS of the connection, for errors.
    fn describe_tls(&self) -> String {
        let mode = match self.ssl_mode {
            PgSslMode::Disable => "disable",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        };
        match (&self.root_cert, self.server_check()) {
            (_, ServerCheck::None) => format!("sslmode={mode}"),
            (Some(path), _) => format!("sslmode={mode}, CA file {}", path.display()),
            (None, _) => format!("sslmode={mode}, the system's CAs"),
        }
    }
}

impl PgStore {
    /// Connects a pool to `url` (a libpq-style `postgres://` URL), with TLS as its `sslmode`
    /// says and `ca_file` (`data.tls_ca_file`) as the CA when the URL names no `sslrootcert`.
    /// The password is never logged.
    pub async fn connect(url: &str, ca_file: Option<&Path>) -> anyhow::Result<PgStore> {
        let target = PgTarget::parse(url, ca_file)?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .build()
            .context("while building the database pool")?;
        let store = PgStore { pool };
        // Fail at start-up, not at the first job.
        drop(
            store
                .client()
                .await
                .with_context(|| format!("while connecting to {} ({})", redact_url(url), target.describe_tls()))?,
        );
        Ok(store)
    }

    async fn client(&self) -> anyhow::Result<deadpool_postgres::Object> {
        self.pool.get().await.context("while connecting to the facts database")
    }

    /// Applies the migrations not yet applied; safe to repeat and to run from many processes.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        // Serialise concurrent migrators (several workers starting at once).
        client.execute("SELECT pg_advisory_lock(727274)", &[]).await?;
        let result = embedded::migrations::runner().run_async(&mut **client).await;
        client.execute("SELECT pg_advisory_unlock(727274)", &[]).await?;
        result.context("while applying the database migrations")?;
        Ok(())
    }

    /// Loads validated facts in one transaction: COPY into a staging table, then an upsert by
    /// the natural key that leaves identical rows untouched. All or nothing.
    pub async fn import(&self, facts: &FactSet) -> anyhow::Result<ImportReport> {
        let started = Instant::now();
        let mut client = self.client().await?;
        let transaction = client.transaction().await.context("while starting the import")?;
        transaction
            .batch_execute("CREATE TEMP TABLE staging (LIKE facts INCLUDING DEFAULTS) ON COMMIT DROP")
            .await
            .context("while creating the staging table")?;
        let sink = transaction
            .copy_in(
                "COPY staging (region_code, year, first_month, last_month, partner, flow, product, currency, value, \
                 source, note) FROM STDIN BINARY",
            )
            .await
            .context("while starting COPY")?;
        let types = [
            Type::TEXT,
            Type::INT2,
            Type::INT2,
            Type::INT2,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::FLOAT8,
            Type::TEXT,
            Type::TEXT,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        tokio::pin!(writer);
        let mut rows = 0u64;
        for fact in facts.facts() {
            let year = fact.period.year() as i16;
            let first = i16::from(fact.period.first_month());
            let last = i16::from(fact.period.last_month());
            writer
                .as_mut()
                .write(&[
                    &fact.region.code(),
                    &year,
                    &first,
                    &last,
                    &&*fact.key.partner,
                    &fact.key.flow.as_str(),
                    &&*fact.key.product,
                    &fact.key.currency.code(),
                    &fact.value,
                    &fact.source.as_deref(),
                    &fact.note.as_deref(),
                ])
                .await
                .context("while copying facts")?;
            rows += 1;
        }
        writer.finish().await.context("while finishing COPY")?;
        let changed = transaction
            .execute(
                "INSERT INTO facts SELECT * FROM staging \
                 ON CONFLICT (region_code, year, first_month, last_month, partner, flow, product, currency) \
                 DO UPDATE SET value = EXCLUDED.value, source = EXCLUDED.source, note = EXCLUDED.note \
                 WHERE (facts.value, facts.source, facts.note) IS DISTINCT FROM \
                       (EXCLUDED.value, EXCLUDED.source, EXCLUDED.note)",
                &[],
            )
            .await
            .context("while merging the facts")?;
        transaction.commit().await.context("while committing the import")?;
        Ok(ImportReport {
            rows,
            changed,
            elapsed: started.elapsed(),
        })
    }

    /// The facts one summary of `region` in `period` can use: the region's, and the nation's
    /// headline series, in the period and its year-ago twin, including the finer periods that
    /// tile them. Two index range scans serve it (the primary key for the region, the
    /// headline index for the nation), whatever the size of the table.
    pub async fn facts_for(&self, region: Region, period: Period) -> anyhow::Result<FactSet> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT region_code, year, first_month, last_month, partner, flow, product, currency, value, source, note \
                 FROM facts \
                 WHERE region_code = $1 AND year = ANY($2) AND first_month >= $3 AND last_month <= $4 \
                 UNION ALL \
                 SELECT region_code, year, first_month, last_month, partner, flow, product, currency, value, source, note \
                 FROM facts \
                 WHERE region_code = $5 AND $1 <> $5 AND partner = 'World' AND product = 'all' \
                   AND year = ANY($2) AND first_month >= $3 AND last_month <= $4",
            )
            .await
            .context("while preparing the facts query")?;
        let years: Vec<i16> = vec![period.year() as i16, period.year() as i16 - 1];
        let first = i16::from(period.first_month());
        let last = i16::from(period.last_month());
        let nation = Region::china();
        let rows = client
            .query(&statement, &[&region.code(), &years, &first, &last, &nation.code()])
            .await
            .context("while reading facts")?;
        let mut reader = RowReader::default();
        let mut facts = Vec::with_capacity(rows.len());
        for row in &rows {
            let code: &str = row.get(0);
            let fact_region = if code == region.code() { region } else { nation };
            let (Some(period), Some(flow), Some(currency)) = (
                Period::new(
                    i32::from(row.get::<_, i16>(1)),
                    row.get::<_, i16>(2) as u8,
                    row.get::<_, i16>(3) as u8,
                ),
                reader.flow(row.get(5)),
                reader.currency(row.get(7)),
            ) else {
                bail!("the facts table holds a row the schema should have refused: {row:?}");
            };
            facts.push(Fact {
                region: fact_region,
                period,
                key: SeriesKey {
                    partner: reader.intern(row.get(4)),
                    flow,
                    product: reader.intern(row.get(6)),
                    currency,
                },
                value: row.get(8),
                source: row.get::<_, Option<&str>>(9).map(|s| reader.intern(s)),
                note: row.get::<_, Option<&str>>(10).map(|s| reader.intern(s)),
            });
        }
        let mut set = FactSet::default();
        set.extend(facts);
        Ok(set)
    }
}

/// Turns the text columns of many rows into shared values, parsing and allocating each
/// distinct text once: a summary reads thousands of rows that repeat a few hundred names.
#[derive(Default)]
struct RowReader {
    names: HashSet<Arc<str>>,
    currencies: HashMap<String, Option<Currency>>,
}

impl RowReader {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.names.insert(shared.clone());
        shared
    }

    /// The schema allows only the flows' own names.
    fn flow(&self, text: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|flow| flow.as_str() == text)
    }

    fn currency(&mut self, text: &str) -> Option<Currency> {
        if let Some(known) = self.currencies.get(text) {
            return *known;
        }
        let parsed = Currency::parse(text);
        self.currencies.insert(text.to_string(), parsed);
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let target = PgTarget::parse(
            "postgres://u:pw@db:5433/facts?options=-c%20search_path%3Dx&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            Some(Path::new("/other/ca.pem")),
        )
        .unwrap();
        assert_eq!(target.ssl_mode, PgSslMode::VerifyFull);
        assert_eq!(
            target.root_cert.as_deref(),
            Some(Path::new("/etc/ca.pem")),
            "the URL wins"
        );
        assert_eq!(target.server_check(), ServerCheck::Full);
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_dbname(), Some("facts"));
        assert_eq!(target.config.get_options(), Some("-c search_path=x"));

        let target = PgTarget::parse("postgres://db/facts", None).unwrap();
        assert_eq!(target.ssl_mode, PgSslMode::Prefer, "libpq's default");
        assert_eq!(target.server_check(), ServerCheck::None);
        let target = PgTarget::parse("postgres://db/facts?sslmode=require", None).unwrap();
        assert_eq!(target.server_check(), ServerCheck::None);
        let with_ca = PgTarget::parse("postgres://db/facts?sslmode=require", Some(Path::new("ca.pem"))).unwrap();
        assert_eq!(
            with_ca.server_check(),
            ServerCheck::Chain,
            "require with a CA checks it"
        );
        let system = PgTarget::parse(
            "postgres://db/f?sslmode=verify-ca&sslrootcert=system",
            Some(Path::new("ca.pem")),
        );
        assert_eq!(system.unwrap().root_cert, None);
        let disable = PgTarget::parse("postgres://db/f?sslmode=disable", None).unwrap();
        assert_eq!(disable.config.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn a_bad_sslmode_is_named_and_the_password_is_not() {
        let err = PgTarget::parse("postgres://u:hunter2@db/facts?sslmode=verify", None).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("sslmode=verify is not one of"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
