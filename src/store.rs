//! Where facts come from: the shipped sample dataset embedded in the binary (`builtin`), a
//! CSV file, or PostgreSQL (`postgres://...`). In memory the facts are loaded and validated
//! once; from PostgreSQL each summary fetches only the rows it needs.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use crate::facts::FactSet;
use crate::job::{ErrorCode, JobError};
use crate::period::Period;
use crate::pgstore::PgStore;
use crate::region::Region;
use crate::settings::DataSettings;

/// The shipped sample dataset (see `data/README.md` for the source of every figure).
pub const BUILTIN_CSV: &str = include_str!("../data/facts.csv");

/// The shipped sample dataset, parsed once per process.
pub fn builtin() -> Arc<FactSet> {
    static BUILTIN: LazyLock<Arc<FactSet>> = LazyLock::new(|| {
        let facts = FactSet::from_csv_reader("builtin dataset (data/facts.csv)", BUILTIN_CSV.as_bytes());
        Arc::new(facts.expect("the shipped dataset is valid (a test checks it)"))
    });
    BUILTIN.clone()
}

/// A fact store.
#[derive(Clone)]
pub enum Store {
    Memory(Arc<FactSet>),
    Postgres(PgStore),
}

impl Store {
    /// Opens `data.source`: `builtin`, a CSV file path, or a `postgres://` URL (whose
    /// migrations are applied), with `data.tls_ca_file` as its CA.
    pub async fn open(data: &DataSettings) -> anyhow::Result<Store> {
        let source = data.source.as_str();
        if source.starts_with("postgres://") || source.starts_with("postgresql://") {
            let store = PgStore::connect(source, data.ca_file()).await?;
            store.migrate().await?;
            return Ok(Store::Postgres(store));
        }
        Ok(match source {
            "builtin" | "" => Store::Memory(builtin()),
            path => Store::Memory(Arc::new(
                FactSet::from_csv_path(Path::new(path)).map_err(anyhow::Error::new)?,
            )),
        })
    }

    /// A store over facts already loaded.
    pub fn from_facts(facts: FactSet) -> Store {
        Store::Memory(Arc::new(facts))
    }

    /// The facts a summary of `region` in `period` may use. Failing to reach the database is a
    /// passing error.
    pub async fn facts_for(&self, region: Region, period: Period) -> Result<Arc<FactSet>, JobError> {
        match self {
            Store::Memory(facts) => Ok(facts.clone()),
            Store::Postgres(db) => db
                .facts_for(region, period)
                .await
                .map(Arc::new)
                .map_err(|e| JobError::transient(ErrorCode::Internal, format!("facts database: {e:#}"))),
        }
    }

    /// A description for logs.
    pub fn describe(&self) -> String {
        match self {
            Store::Memory(facts) => format!("{} facts in memory", facts.len()),
            Store::Postgres(_) => "PostgreSQL".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_dataset_is_valid() {
        assert!(builtin().len() > 300, "{}", builtin().len());
    }
}
