//! From a summary to a PDF bulletin: fill the template, then compile it with typst.

use chrono::{NaiveDate, Utc};

use crate::narrative::Language;
use crate::summary::Summary;
use crate::template::{BulletinMeta, TemplateError, Templates};
use crate::typst::{CompileError, Typst};

/// Why a bulletin could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// A rendered bulletin.
#[derive(Debug, Clone)]
pub struct Bulletin {
    pub pdf: Vec<u8>,
    /// The Typst source that was compiled.
    pub source: String,
    /// How long typst took.
    pub compile_time: std::time::Duration,
}

/// Fills templates and drives typst. Build once and share.
pub struct Renderer {
    templates: Templates,
    typst: Typst,
    publisher: String,
}

impl Renderer {
    pub fn new(typst: Typst, publisher: String) -> Renderer {
        Renderer {
            templates: Templates::new(),
            typst,
            publisher,
        }
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The bulletin's metadata for a language and date of issue.
    pub fn meta(&self, language: Language, issued: NaiveDate) -> BulletinMeta {
        BulletinMeta {
            language,
            issued,
            publisher: self.publisher.clone(),
        }
    }

    /// Makes the PDF of `summary`. The PDF's creation time is the start of the issue date, so
    /// one request on one day always gives the same bytes.
    pub async fn render(
        &self,
        summary: &Summary,
        language: Language,
        issued: NaiveDate,
    ) -> Result<Bulletin, RenderError> {
        let source = self.templates.bulletin(summary, &self.meta(language, issued))?;
        let created = issued
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp();
        let started = std::time::Instant::now();
        let pdf = self.typst.compile(&source, language, created).await?;
        Ok(Bulletin {
            pdf,
            source,
            compile_time: started.elapsed(),
        })
    }
}

/// The date of issue: `SOURCE_DATE_EPOCH` when set (reproducible builds), else today (UTC).
pub fn issue_date() -> NaiveDate {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(Utc::now)
        .date_naive()
}
