//! Where facts come from: the shipped sample dataset embedded in the binary (`builtin`), or a
//! CSV file. Loaded and validated once; summaries then read it without further I/O.

use std::path::Path;
use std::sync::Arc;

use crate::facts::{FactError, FactSet};

/// The shipped sample dataset (see `data/README.md` for the source of every figure).
pub const BUILTIN_CSV: &str = include_str!("../data/facts.csv");

/// A loaded fact store.
#[derive(Debug, Clone)]
pub struct Store {
    facts: Arc<FactSet>,
}

impl Store {
    /// Opens `data.source`: `builtin` or a CSV file path.
    pub fn open(source: &str) -> Result<Store, FactError> {
        let facts = match source {
            "builtin" | "" => FactSet::from_csv_reader("builtin dataset (data/facts.csv)", BUILTIN_CSV.as_bytes())?,
            path => FactSet::from_csv_path(Path::new(path))?,
        };
        Ok(Store::from_facts(facts))
    }

    pub fn from_facts(facts: FactSet) -> Store {
        Store { facts: Arc::new(facts) }
    }

    pub fn facts(&self) -> &FactSet {
        &self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_dataset_is_valid() {
        let store = Store::open("builtin").unwrap();
        assert!(store.facts().len() > 300, "{}", store.facts().len());
    }
}
