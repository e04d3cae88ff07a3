//! PostgreSQL as the facts store (`data.source = postgres://...`): a connection pool, the
//! schema in versioned migrations (`migrations/`, embedded), bulk import with COPY in one
//! transaction, and the query that fetches only what one summary needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::facts::{Currency, Fact, FactSet, Flow, SeriesKey};
use crate::period::Period;
use crate::region::Region;

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

impl PgStore {
    /// Connects a pool to `url` (a libpq-style `postgres://` URL). The password is never logged.
    pub async fn connect(url: &str) -> anyhow::Result<PgStore> {
        let config: tokio_postgres::Config = url.parse().with_context(|| {
            format!(
                "data.source `{}` is not a valid postgres:// URL",
                crate::settings::redact_url(url)
            )
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
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
        drop(store.client().await?);
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
    /// tile them. The primary key's index serves it, whatever the size of the table.
    pub async fn facts_for(&self, region: Region, period: Period) -> anyhow::Result<FactSet> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT region_code, year, first_month, last_month, partner, flow, product, currency, value, source, note \
                 FROM facts \
                 WHERE region_code = ANY($1) AND year = ANY($2) AND first_month >= $3 AND last_month <= $4 \
                   AND (region_code = $5 OR (partner = 'World' AND product = 'all'))",
            )
            .await
            .context("while preparing the facts query")?;
        let regions = vec![region.code(), Region::china().code()];
        let years: Vec<i16> = vec![period.year() as i16, period.year() as i16 - 1];
        let first = i16::from(period.first_month());
        let last = i16::from(period.last_month());
        let rows = client
            .query(&statement, &[&regions, &years, &first, &last, &region.code()])
            .await
            .context("while reading facts")?;
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |text: &str| -> Arc<str> {
            if let Some(shared) = names.get(text) {
                return shared.clone();
            }
            let shared: Arc<str> = Arc::from(text);
            names.insert(text.to_string(), shared.clone());
            shared
        };
        let mut set = FactSet::default();
        let mut facts = Vec::with_capacity(rows.len());
        for row in &rows {
            let code: &str = row.get(0);
            let flow: &str = row.get(5);
            let currency: &str = row.get(7);
            let (Ok(region), Some(period), Some(flow), Some(currency)) = (
                Region::parse(code),
                Period::new(
                    i32::from(row.get::<_, i16>(1)),
                    row.get::<_, i16>(2) as u8,
                    row.get::<_, i16>(3) as u8,
                ),
                Flow::parse(flow),
                Currency::parse(currency),
            ) else {
                anyhow::bail!("the facts table holds a row the schema should have refused: {row:?}");
            };
            facts.push(Fact {
                region,
                period,
                key: SeriesKey {
                    partner: intern(row.get(4)),
                    flow,
                    product: intern(row.get(6)),
                    currency,
                },
                value: row.get(8),
                source: row.get::<_, Option<&str>>(9).map(&mut intern),
                note: row.get::<_, Option<&str>>(10).map(&mut intern),
            });
        }
        set.extend(facts);
        Ok(set)
    }
}
