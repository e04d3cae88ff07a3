//! A bulletin job apart from any transport: the request of the contract, parsed and checked
//! at the boundary, and the error codes a failed job reports. Pure; the worker and the CLI
//! both use it.

use serde::{Deserialize, Serialize};

use crate::facts::{FactError, FactErrorKind, FactSet, RawFact, json_type};
use crate::narrative::Language;
use crate::period::Period;
use crate::region::Region;
use crate::render::RenderError;
use crate::summary::{self, Summary, SummaryError};
use crate::typst::CompileError;

/// The longest job id accepted, in characters.
pub const MAX_JOB_ID_CHARS: usize = 128;
/// The most inline facts one request may carry.
pub const MAX_INLINE_FACTS: usize = 10_000;

/// The error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    UnknownRegion,
    NoData,
    InconsistentData,
    RenderFailed,
    Timeout,
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownRegion => "unknown_region",
            ErrorCode::NoData => "no_data",
            ErrorCode::InconsistentData => "inconsistent_data",
            ErrorCode::RenderFailed => "render_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Why a job failed: a code, a sentence a person can act on, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
    /// True when the cause may pass (typst crashed or timed out, storage or broker down).
    pub transient: bool,
}

impl JobError {
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> JobError {
        JobError {
            code,
            message: message.into(),
            transient: false,
        }
    }

    pub fn transient(code: ErrorCode, message: impl Into<String>) -> JobError {
        JobError {
            code,
            message: message.into(),
            transient: true,
        }
    }
}

impl From<FactError> for JobError {
    fn from(error: FactError) -> JobError {
        let code = match error.kind {
            FactErrorKind::Invalid => ErrorCode::InvalidRequest,
            FactErrorKind::Inconsistent => ErrorCode::InconsistentData,
        };
        JobError::permanent(code, error.message)
    }
}

impl From<SummaryError> for JobError {
    fn from(error: SummaryError) -> JobError {
        match error {
            SummaryError::NoData(message) => JobError::permanent(ErrorCode::NoData, message),
            SummaryError::Inconsistent(message) => JobError::permanent(ErrorCode::InconsistentData, message),
        }
    }
}

impl From<RenderError> for JobError {
    fn from(error: RenderError) -> JobError {
        let message = error.to_string();
        match error {
            RenderError::Template(_) | RenderError::Compile(CompileError::Rejected { .. }) => {
                JobError::permanent(ErrorCode::RenderFailed, message)
            }
            RenderError::Compile(CompileError::Timeout(_)) => JobError::transient(ErrorCode::Timeout, message),
            RenderError::Compile(CompileError::Crashed { .. }) => JobError::transient(ErrorCode::RenderFailed, message),
            RenderError::Compile(CompileError::Setup(_)) => JobError::transient(ErrorCode::Internal, message),
        }
    }
}

/// A valid request.
#[derive(Debug, Clone)]
pub struct Request {
    pub job_id: String,
    pub region: Region,
    pub period: Period,
    pub language: Language,
    /// Inline facts: when present, the bulletin uses these and nothing else.
    pub facts: Option<FactSet>,
}

/// A request that failed its checks, with whatever of it was valid (for the result's routing).
#[derive(Debug, Clone)]
pub struct Rejected {
    pub job_id: String,
    pub region: Option<Region>,
    pub period: Option<Period>,
    pub language: Language,
    pub error: JobError,
}

/// The fields of a request as they arrive; every field is checked by hand for a clear error.
#[derive(Debug, Default, Deserialize)]
struct RawRequest {
    job_id: Option<serde_json::Value>,
    region: Option<serde_json::Value>,
    period: Option<serde_json::Value>,
    language: Option<serde_json::Value>,
    facts: Option<serde_json::Value>,
}

/// Parses and checks a request body. `message_id` is the AMQP message id, the job id when the
/// body has none; `new_id` makes one when neither has.
pub fn parse_request(
    body: &[u8],
    message_id: Option<&str>,
    max_bytes: usize,
    new_id: impl Fn() -> String,
) -> Result<Request, Box<Rejected>> {
    let fallback_id = message_id.filter(|id| valid_job_id(id).is_ok()).map(str::to_string);
    let mut rejected = Rejected {
        job_id: fallback_id.clone().unwrap_or_default(),
        region: None,
        period: None,
        language: Language::En,
        error: JobError::permanent(ErrorCode::InvalidRequest, String::new()),
    };
    let fail = |mut rejected: Rejected, code, message: String| {
        if rejected.job_id.is_empty() {
            rejected.job_id = new_id();
        }
        rejected.error = JobError::permanent(code, message);
        Err(Box::new(rejected))
    };
    if body.len() > max_bytes {
        let message = format!("the request is {} bytes; at most {max_bytes} are accepted", body.len());
        return fail(rejected, ErrorCode::InvalidRequest, message);
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            let message = format!("the request body is not valid UTF-8 (at byte {})", e.valid_up_to());
            return fail(rejected, ErrorCode::InvalidRequest, message);
        }
    };
    if text.trim().is_empty() {
        return fail(
            rejected,
            ErrorCode::InvalidRequest,
            "the request body is empty; send a JSON object".into(),
        );
    }
    let raw: RawRequest = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => {
            serde_json::from_value(serde_json::Value::Object(map)).expect("every field is a JSON value")
        }
        Ok(other) => {
            let message = format!("the request must be a JSON object, not {}", json_type(&other));
            return fail(rejected, ErrorCode::InvalidRequest, message);
        }
        Err(e) => {
            let message = format!("the request body is not valid JSON: {e}");
            return fail(rejected, ErrorCode::InvalidRequest, message);
        }
    };

    match &raw.job_id {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(id)) => match valid_job_id(id) {
            Ok(()) => rejected.job_id = id.clone(),
            Err(why) => {
                return fail(rejected, ErrorCode::InvalidRequest, format!("field `job_id`: {why}"));
            }
        },
        Some(other) => {
            let message = format!("field `job_id` must be a string, not {}", json_type(other));
            return fail(rejected, ErrorCode::InvalidRequest, message);
        }
    }
    match &raw.language {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(l)) => match Language::parse(l) {
            Some(language) => rejected.language = language,
            None => {
                let message = format!("field `language` is `{}`: use en or zh", crate::facts::clip(l));
                return fail(rejected, ErrorCode::InvalidRequest, message);
            }
        },
        Some(other) => {
            let message = format!("field `language` must be \"en\" or \"zh\", not {}", json_type(other));
            return fail(rejected, ErrorCode::InvalidRequest, message);
        }
    }
    let region_text = match required_string(&raw.region, "region", "a province name or code such as Heilongjiang") {
        Ok(text) => text,
        Err(message) => return fail(rejected, ErrorCode::InvalidRequest, message),
    };
    let period_text = match required_string(&raw.period, "period", "a period such as 2019-H1") {
        Ok(text) => text,
        Err(message) => return fail(rejected, ErrorCode::InvalidRequest, message),
    };
    match Period::parse(period_text) {
        Ok(period) => rejected.period = Some(period),
        Err(e) => {
            return fail(rejected, ErrorCode::InvalidRequest, format!("field `period`: {e}"));
        }
    }
    match Region::parse(region_text) {
        Ok(region) => rejected.region = Some(region),
        Err(e) => {
            return fail(rejected, ErrorCode::UnknownRegion, format!("field `region`: {e}"));
        }
    }
    let facts = match &raw.facts {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => match inline_facts(items) {
            Ok(facts) => Some(facts),
            Err(error) => {
                if rejected.job_id.is_empty() {
                    rejected.job_id = new_id();
                }
                rejected.error = error;
                return Err(Box::new(rejected));
            }
        },
        Some(other) => {
            let message = format!(
                "field `facts` must be an array of fact objects, not {}",
                json_type(other)
            );
            return fail(rejected, ErrorCode::InvalidRequest, message);
        }
    };
    let job_id = if rejected.job_id.is_empty() {
        new_id()
    } else {
        rejected.job_id
    };
    Ok(Request {
        job_id,
        region: rejected.region.expect("checked above"),
        period: rejected.period.expect("checked above"),
        language: rejected.language,
        facts,
    })
}

fn inline_facts(items: &[serde_json::Value]) -> Result<FactSet, JobError> {
    if items.len() > MAX_INLINE_FACTS {
        let message = format!(
            "field `facts` holds {} facts; at most {MAX_INLINE_FACTS} are accepted",
            items.len()
        );
        return Err(JobError::permanent(ErrorCode::InvalidRequest, message));
    }
    let mut raws = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            serde_json::Value::Object(_) => {
                raws.push(serde_json::from_value::<RawFact>(item.clone()).expect("every field is a JSON value"))
            }
            other => {
                let message = format!("facts[{index}] must be an object, not {}", json_type(other));
                return Err(JobError::permanent(ErrorCode::InvalidRequest, message));
            }
        }
    }
    FactSet::from_inline(&raws).map_err(|e| {
        let mut error = JobError::from(e);
        error.message = format!("field `facts`: {}", error.message);
        error
    })
}

fn required_string<'a>(value: &'a Option<serde_json::Value>, field: &str, example: &str) -> Result<&'a str, String> {
    match value {
        None | Some(serde_json::Value::Null) => Err(format!("field `{field}` is missing: give {example}")),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
            Err(format!("field `{field}` is empty: give {example}"))
        }
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "field `{field}` must be a string such as {example}, not {}",
            json_type(other)
        )),
    }
}

/// A job id is 1-128 printable characters.
pub fn valid_job_id(id: &str) -> Result<(), String> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_JOB_ID_CHARS {
        return Err(format!("must be 1 to {MAX_JOB_ID_CHARS} characters, not {chars}"));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace() && c != ' ') {
        return Err("must be printable characters only".to_string());
    }
    Ok(())
}

/// The result of a job, as published on the results exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobResult {
    Succeeded {
        job_id: String,
        region: String,
        period: String,
        language: Language,
        pdf: crate::storage::StoredPdf,
        summary: serde_json::Value,
        finished_at: String,
        attempt: u32,
    },
    Failed {
        job_id: String,
        /// The region and period when the request gave them validly.
        region: Option<String>,
        period: Option<String>,
        language: Language,
        error: ErrorBody,
        finished_at: String,
        attempt: u32,
    },
}

/// The `error` object of a failed result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl JobResult {
    pub fn job_id(&self) -> &str {
        match self {
            JobResult::Succeeded { job_id, .. } | JobResult::Failed { job_id, .. } => job_id,
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(self, JobResult::Succeeded { .. })
    }
}

/// The routing key of a result: `bulletin.<status>.<region-slug>.<period>`, with `unknown`
/// for a region or period the request did not validly give.
pub fn routing_key(succeeded: bool, region: Option<Region>, period: Option<Period>) -> String {
    let status = if succeeded { "succeeded" } else { "failed" };
    let slug = region.map_or_else(|| "unknown".to_string(), |r| r.slug());
    let period = period.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    format!("bulletin.{status}.{slug}.{period}")
}

/// The current time as RFC 3339, for `finished_at`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The summary a request asks for: from its inline facts if it has them, else from the
/// store's facts.
pub async fn summarise(request: &Request, store: &crate::store::Store) -> Result<Summary, JobError> {
    match &request.facts {
        Some(facts) => Ok(summary::summarise(facts, request.region, request.period)?),
        None => {
            let facts = store.facts_for(request.region, request.period).await?;
            Ok(summary::summarise(&facts, request.region, request.period)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Request, Box<Rejected>> {
        parse_request(body.as_bytes(), None, 1 << 20, || "generated".to_string())
    }

    #[test]
    fn parses_a_minimal_request() {
        let r = parse(r#"{"region":"黑龙江","period":"2019-01..06","extra":1}"#).unwrap();
        assert_eq!(r.job_id, "generated");
        assert_eq!(r.region.slug(), "heilongjiang");
        assert_eq!(r.period.to_string(), "2019-H1");
        assert_eq!(r.language, Language::En);
    }

    #[test]
    fn the_message_id_is_the_job_id_when_the_body_has_none() {
        let r = parse_request(br#"{"region":"Jilin","period":"2019"}"#, Some("m-1"), 1 << 20, || {
            "x".into()
        })
        .unwrap();
        assert_eq!(r.job_id, "m-1");
        let r = parse_request(
            br#"{"job_id":"j","region":"Jilin","period":"2019"}"#,
            Some("m-1"),
            1 << 20,
            || "x".into(),
        )
        .unwrap();
        assert_eq!(r.job_id, "j");
    }

    #[test]
    fn each_bad_request_names_its_fault() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let long_id = format!(r#"{{"job_id":"{}","region":"Jilin","period":"2019"}}"#, "x".repeat(129));
        let cases: Vec<(String, ErrorCode, &str)> = vec![
            ("".into(), ErrorCode::InvalidRequest, "empty"),
            ("not json".into(), ErrorCode::InvalidRequest, "not valid JSON"),
            ("[1,2]".into(), ErrorCode::InvalidRequest, "JSON object"),
            (deep, ErrorCode::InvalidRequest, "not valid JSON"),
            (r#"{"period":"2019"}"#.into(), ErrorCode::InvalidRequest, "`region` is missing"),
            (r#"{"region":"Jilin"}"#.into(), ErrorCode::InvalidRequest, "`period` is missing"),
            (r#"{"region":7,"period":"2019"}"#.into(), ErrorCode::InvalidRequest, "`region` must be a string"),
            (r#"{"region":"Jilin","period":2019}"#.into(), ErrorCode::InvalidRequest, "`period` must be a string"),
            (r#"{"region":"Atlantis","period":"2019"}"#.into(), ErrorCode::UnknownRegion, "Atlantis"),
            (r#"{"region":"Jilin","period":"2019-H3"}"#.into(), ErrorCode::InvalidRequest, "2019-H3"),
            (r#"{"region":"Jilin","period":"2019","language":"fr"}"#.into(), ErrorCode::InvalidRequest, "`language`"),
            (long_id, ErrorCode::InvalidRequest, "`job_id`"),
            (r#"{"region":"Jilin","period":"2019","facts":{}}"#.into(), ErrorCode::InvalidRequest, "`facts` must be an array"),
            (r#"{"region":"Jilin","period":"2019","facts":[1]}"#.into(), ErrorCode::InvalidRequest, "facts[0] must be an object"),
            (
                r#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":-1,"currency":"USD"}]}"#.into(),
                ErrorCode::InvalidRequest,
                "facts[0], field `value`",
            ),
        ];
        for (body, code, needle) in cases {
            let rejected = parse(&body).unwrap_err();
            assert_eq!(rejected.error.code, code, "{body}: {}", rejected.error.message);
            assert!(
                rejected.error.message.contains(needle),
                "{body}: {}",
                rejected.error.message
            );
            assert!(!rejected.error.transient);
            assert!(!rejected.job_id.is_empty());
        }
        let big = parse_request(&[b' '; 100], None, 10, || "x".into()).unwrap_err();
        assert!(big.error.message.contains("at most 10"), "{}", big.error.message);
        let utf8 = parse_request(b"{\"region\":\"\xff\"}", None, 100, || "x".into()).unwrap_err();
        assert!(utf8.error.message.contains("UTF-8"), "{}", utf8.error.message);
    }

    #[test]
    fn routing_keys_follow_the_contract() {
        let hlj = Region::parse("Heilongjiang").ok();
        let h1 = Period::parse("2019-H1").ok();
        assert_eq!(routing_key(true, hlj, h1), "bulletin.succeeded.heilongjiang.2019-H1");
        assert_eq!(routing_key(false, None, h1), "bulletin.failed.unknown.2019-H1");
        assert_eq!(
            routing_key(false, Region::parse("内蒙古").ok(), None),
            "bulletin.failed.inner-mongolia.unknown"
        );
    }

    #[test]
    fn a_rejected_request_keeps_what_was_valid() {
        let rejected =
            parse(r#"{"job_id":"a","region":"Jilin","period":"2019","language":"zh","facts":"x"}"#).unwrap_err();
        assert_eq!(rejected.job_id, "a");
        assert_eq!(rejected.region.unwrap().slug(), "jilin");
        assert_eq!(rejected.period.unwrap().to_string(), "2019");
        assert_eq!(rejected.language, Language::Zh);
    }
}
