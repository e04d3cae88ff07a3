//! Trade facts: the fields of the contract, their validation, and [`FactSet`], the validated
//! collection that answers "what is this series worth in this period", summing finer periods
//! that tile it when the period has no fact of its own.
//!
//! Facts come from a CSV file ([`FactSet::from_csv_reader`]) or inline in a request
//! ([`FactSet::from_inline`]). Either way every fact is checked and nothing is half-loaded:
//! the first errors, each naming its file and line (or list index) and field, fail the load.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::period::Period;
use crate::region::Region;

/// The largest value a fact may carry: far above any trade figure in any currency, and low
/// enough that sums stay exact in `f64`.
pub const MAX_VALUE: f64 = 1e17;
/// The longest partner or product name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 120;
/// How many errors one failed load reports before summing up the rest.
const MAX_REPORTED_ERRORS: usize = 8;
/// How far a total may stray from exports plus imports, as a share of the total.
pub const CONSISTENCY_TOLERANCE: f64 = 0.005;

/// The direction of trade a fact measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    Total,
    Exports,
    Imports,
}

impl Flow {
    pub const ALL: [Flow; 3] = [Flow::Total, Flow::Exports, Flow::Imports];

    /// Parses a flow name, in any case (`export`/`import` too).
    pub fn parse(text: &str) -> Option<Flow> {
        match text.trim().to_ascii_lowercase().as_str() {
            "total" => Some(Flow::Total),
            "exports" | "export" => Some(Flow::Exports),
            "imports" | "import" => Some(Flow::Imports),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Flow::Total => "total",
            Flow::Exports => "exports",
            Flow::Imports => "imports",
        }
    }
}

/// An ISO 4217 currency code (`CNY`, `USD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(&'static str);

impl Currency {
    pub const CNY: Currency = Currency("CNY");
    pub const USD: Currency = Currency("USD");

    /// Parses an ISO 4217 code in any case.
    pub fn parse(text: &str) -> Option<Currency> {
        iso_currency::Currency::from_code(&text.trim().to_ascii_uppercase()).map(|c| Currency(c.code()))
    }

    pub fn code(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

/// The partner that stands for all partners together.
pub const WORLD: &str = "World";
/// The product that stands for all products together.
pub const ALL_PRODUCTS: &str = "all";

/// Everything that identifies a series apart from its region and period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub partner: Arc<str>,
    pub flow: Flow,
    pub product: Arc<str>,
    pub currency: Currency,
}

impl SeriesKey {
    /// The series of all partners and all products.
    pub fn headline(flow: Flow, currency: Currency) -> SeriesKey {
        SeriesKey {
            partner: WORLD.into(),
            flow,
            product: ALL_PRODUCTS.into(),
            currency,
        }
    }

    pub fn is_world(&self) -> bool {
        &*self.partner == WORLD
    }

    pub fn is_all_products(&self) -> bool {
        &*self.product == ALL_PRODUCTS
    }
}

/// One validated fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub region: Region,
    pub period: Period,
    pub key: SeriesKey,
    pub value: f64,
    pub source: Option<Arc<str>>,
    pub note: Option<Arc<str>>,
}

/// A value with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub value: f64,
    pub source: Option<Arc<str>>,
    pub note: Option<Arc<str>>,
}

/// A figure found for a period: one fact, or the sum of facts that tile the period.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: f64,
    /// The periods whose facts were summed (one, when the period has a fact of its own).
    pub parts: Vec<Period>,
    pub sources: Vec<Arc<str>>,
    pub notes: Vec<Arc<str>>,
}

/// Whether a load failed on a malformed fact or on facts that contradict each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactErrorKind {
    /// A fact is malformed: unknown region, bad value, missing field, conflicting duplicate.
    Invalid,
    /// A total differs from its exports plus imports by more than the tolerance.
    Inconsistent,
}

/// Why facts could not be loaded; the message lists the first errors with their places.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FactError {
    pub kind: FactErrorKind,
    pub message: String,
}

/// The raw fields of one fact, before validation.
#[derive(Debug, Default, Deserialize)]
pub struct RawFact {
    pub region: Option<serde_json::Value>,
    pub period: Option<serde_json::Value>,
    pub partner: Option<serde_json::Value>,
    pub flow: Option<serde_json::Value>,
    pub product: Option<serde_json::Value>,
    pub value: Option<serde_json::Value>,
    pub currency: Option<serde_json::Value>,
    pub source: Option<serde_json::Value>,
    pub note: Option<serde_json::Value>,
}

/// A validated collection of facts, indexed by region, series and period.
#[derive(Debug, Default, Clone)]
pub struct FactSet {
    series: HashMap<Region, HashMap<SeriesKey, BTreeMap<Period, Observation>>>,
    len: usize,
}

/// Where a fact was read: a CSV line or an index in an inline list.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// A line of the loader's file number `file`.
    Line {
        file: usize,
        line: u64,
    },
    Index(usize),
}

/// Collects facts and errors during one load, so that nothing is half-loaded.
struct Loader {
    /// How messages name the inputs: file names, or `facts` for an inline list.
    names: Vec<String>,
    set: FactSet,
    places: HashMap<(Region, SeriesKey, Period), Place>,
    errors: Vec<String>,
    error_count: usize,
    interned: HashMap<String, Arc<str>>,
}

impl Loader {
    fn new(name: &str) -> Loader {
        Loader {
            names: vec![name.to_string()],
            set: FactSet::default(),
            places: HashMap::new(),
            errors: Vec::new(),
            error_count: 0,
            interned: HashMap::new(),
        }
    }

    fn error(&mut self, message: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(message);
        }
    }

    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(found) = self.interned.get(text) {
            return found.clone();
        }
        let shared: Arc<str> = text.into();
        self.interned.insert(text.to_string(), shared.clone());
        shared
    }

    fn describe_place(&self, place: Place) -> String {
        match place {
            Place::Line { file, line } => format!("{} line {line}", self.names[file]),
            Place::Index(index) => format!("{}[{index}]", self.names[0]),
        }
    }

    /// Validates one fact's fields; records an error naming `place` and the field, or adds it.
    fn add(&mut self, place: Place, raw: &RawFields<'_>) {
        match self.validate(raw) {
            Ok(fact) => self.insert(place, fact),
            Err((field, why)) => {
                let message = format!("{}, field `{field}`: {why}", self.describe_place(place));
                self.error(message)
            }
        }
    }

    fn validate(&mut self, raw: &RawFields<'_>) -> Result<Fact, (&'static str, String)> {
        let region_text = required(raw.region, "region")?;
        let region = Region::parse(region_text).map_err(|e| ("region", e.to_string()))?;
        let period_text = required(raw.period, "period")?;
        let period = Period::parse(period_text).map_err(|e| ("period", e.to_string()))?;
        let partner = name_field(raw.partner, "partner", WORLD)?;
        let partner = if partner.eq_ignore_ascii_case(WORLD) {
            WORLD
        } else {
            partner
        };
        let flow_text = required(raw.flow, "flow")?;
        let flow = Flow::parse(flow_text).ok_or_else(|| {
            (
                "flow",
                format!("`{}` is not a flow: use total, exports or imports", clip(flow_text)),
            )
        })?;
        let product = name_field(raw.product, "product", ALL_PRODUCTS)?;
        let product = if product.eq_ignore_ascii_case(ALL_PRODUCTS) {
            ALL_PRODUCTS
        } else {
            product
        };
        let value = parse_value(required(raw.value, "value")?).map_err(|why| ("value", why))?;
        let currency_text = required(raw.currency, "currency")?;
        let currency = Currency::parse(currency_text).ok_or_else(|| {
            (
                "currency",
                format!(
                    "`{}` is not an ISO 4217 currency code such as CNY or USD",
                    clip(currency_text)
                ),
            )
        })?;
        let source = optional_text(raw.source, "source")?.map(|s| self.intern(s));
        let note = optional_text(raw.note, "note")?.map(|s| self.intern(s));
        let key = SeriesKey {
            partner: self.intern(partner),
            flow,
            product: self.intern(product),
            currency,
        };
        Ok(Fact {
            region,
            period,
            key,
            value,
            source,
            note,
        })
    }

    fn insert(&mut self, place: Place, fact: Fact) {
        let id = (fact.region, fact.key.clone(), fact.period);
        if let Some(first) = self.places.get(&id) {
            let existing = &self.set.series[&fact.region][&fact.key][&fact.period];
            if existing.value != fact.value {
                let message = format!(
                    "{}, field `value`: {} repeats the fact at {} with a different value ({} against {})",
                    self.describe_place(place),
                    describe(&fact.region, &fact.key, &fact.period),
                    self.describe_place(*first),
                    fact.value,
                    existing.value
                );
                self.error(message);
            }
            return;
        }
        self.places.insert(id, place);
        self.set.push(fact);
    }

    /// Checks every total against its exports plus imports, then hands over the set.
    fn finish(mut self) -> Result<FactSet, FactError> {
        if self.error_count > 0 {
            return Err(self.failure(FactErrorKind::Invalid));
        }
        let mut inconsistent = Vec::new();
        for (region, series) in &self.set.series {
            for (key, periods) in series.iter().filter(|(k, _)| k.flow == Flow::Total) {
                let side = |flow| SeriesKey { flow, ..key.clone() };
                let (Some(exports), Some(imports)) =
                    (series.get(&side(Flow::Exports)), series.get(&side(Flow::Imports)))
                else {
                    continue;
                };
                for (period, total) in periods {
                    let (Some(e), Some(i)) = (exports.get(period), imports.get(period)) else {
                        continue;
                    };
                    if !consistent(total.value, e.value + i.value) {
                        let place = |flow| self.describe_place(self.places[&(*region, side(flow), *period)]);
                        inconsistent.push(format!(
                            "{}: the total {} at {} differs from exports {} at {} plus imports {} at {} by more than 0.5 %",
                            describe(region, key, period),
                            total.value,
                            place(Flow::Total),
                            e.value,
                            place(Flow::Exports),
                            i.value,
                            place(Flow::Imports),
                        ));
                    }
                }
            }
        }
        if !inconsistent.is_empty() {
            inconsistent.sort();
            for message in inconsistent {
                self.error(message);
            }
            return Err(self.failure(FactErrorKind::Inconsistent));
        }
        Ok(self.set)
    }

    fn failure(&self, kind: FactErrorKind) -> FactError {
        let mut message = self.errors.join("; ");
        if self.error_count > self.errors.len() {
            message.push_str(&format!("; and {} more errors", self.error_count - self.errors.len()));
        }
        FactError { kind, message }
    }
}

/// Whether a total agrees with its exports plus imports within the tolerance.
pub fn consistent(total: f64, sum: f64) -> bool {
    (total - sum).abs() <= CONSISTENCY_TOLERANCE * total
}

/// Names a series at a period for messages: `Heilongjiang 2019-H1 total (World, all, CNY)`.
pub fn describe(region: &Region, key: &SeriesKey, period: &Period) -> String {
    format!(
        "{region} {period} {} (partner {}, product {}, {})",
        key.flow.as_str(),
        clip(&key.partner),
        clip(&key.product),
        key.currency
    )
}

/// One fact's fields as text, borrowed from a CSV record or a JSON object.
struct RawFields<'a> {
    region: Option<&'a str>,
    period: Option<&'a str>,
    partner: Option<&'a str>,
    flow: Option<&'a str>,
    product: Option<&'a str>,
    value: Option<&'a str>,
    currency: Option<&'a str>,
    source: Option<&'a str>,
    note: Option<&'a str>,
}

impl<'a> RawFields<'a> {
    /// The fields as `lookup` finds them by name.
    fn from_lookup(lookup: impl Fn(&str) -> Option<&'a str>) -> RawFields<'a> {
        RawFields {
            region: lookup("region"),
            period: lookup("period"),
            partner: lookup("partner"),
            flow: lookup("flow"),
            product: lookup("product"),
            value: lookup("value"),
            currency: lookup("currency"),
            source: lookup("source"),
            note: lookup("note"),
        }
    }
}

fn required<'a>(text: Option<&'a str>, _field: &'static str) -> Result<&'a str, (&'static str, String)> {
    match text.map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err((_field, "is missing or empty".to_string())),
    }
}

fn name_field<'a>(
    text: Option<&'a str>,
    field: &'static str,
    default: &'static str,
) -> Result<&'a str, (&'static str, String)> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    check_text(text, field, MAX_NAME_CHARS)?;
    Ok(text)
}

fn optional_text<'a>(text: Option<&'a str>, field: &'static str) -> Result<Option<&'a str>, (&'static str, String)> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    check_text(text, field, 500)?;
    Ok(Some(text))
}

fn check_text(text: &str, field: &'static str, max: usize) -> Result<(), (&'static str, String)> {
    let chars = text.chars().count();
    if chars > max {
        return Err((field, format!("is {chars} characters long; at most {max} are allowed")));
    }
    if text.chars().any(char::is_control) {
        return Err((field, "contains control characters".to_string()));
    }
    Ok(())
}

fn parse_value(text: &str) -> Result<f64, String> {
    let shown = clip(text);
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+' || b == b'e' || b == b'E');
    let value: f64 = match text.parse() {
        Ok(v) if plain => v,
        _ => {
            return Err(format!(
                "`{shown}` is not a number (write a plain decimal such as 93340000000)"
            ));
        }
    };
    if !value.is_finite() {
        return Err(format!("`{shown}` is not a finite number"));
    }
    if value < 0.0 {
        return Err(format!("`{shown}` is negative; values are at least 0"));
    }
    if value > MAX_VALUE {
        return Err(format!(
            "`{shown}` is larger than {MAX_VALUE:e}, the largest value accepted"
        ));
    }
    Ok(value)
}

/// Shortens text quoted in a message to at most 40 characters.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl FactSet {
    /// Loads and validates a CSV file with the contract's columns (plus optional `source` and
    /// `note`). `name` is how messages refer to the file.
    pub fn from_csv_reader(name: &str, reader: impl Read) -> Result<FactSet, FactError> {
        let mut loader = Loader::new(name);
        read_csv(&mut loader, 0, reader)?;
        loader.finish()
    }

    /// Loads and validates several CSV files as one set: a fact repeated across files with a
    /// different value, or a total in one file that its exports and imports in another
    /// contradict, is an error naming both places.
    pub fn from_csv_paths(paths: &[std::path::PathBuf]) -> Result<FactSet, FactError> {
        let mut loader = Loader::new("");
        loader.names = paths.iter().map(|p| p.display().to_string()).collect();
        for (index, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| FactError {
                kind: FactErrorKind::Invalid,
                message: format!("cannot open facts file {}: {e}", path.display()),
            })?;
            read_csv(&mut loader, index, std::io::BufReader::new(file))?;
        }
        loader.finish()
    }

    /// Loads and validates a CSV file from disk.
    pub fn from_csv_path(path: &Path) -> Result<FactSet, FactError> {
        let file = std::fs::File::open(path).map_err(|e| FactError {
            kind: FactErrorKind::Invalid,
            message: format!("cannot open facts file {}: {e}", path.display()),
        })?;
        FactSet::from_csv_reader(&path.display().to_string(), std::io::BufReader::new(file))
    }

    /// Validates facts given inline in a request; messages name them as `facts[i]`.
    pub fn from_inline(facts: &[RawFact]) -> Result<FactSet, FactError> {
        let mut loader = Loader::new("facts");
        for (index, raw) in facts.iter().enumerate() {
            let place = format!("facts[{index}]");
            let fields = [
                ("region", &raw.region),
                ("period", &raw.period),
                ("partner", &raw.partner),
                ("flow", &raw.flow),
                ("product", &raw.product),
                ("value", &raw.value),
                ("currency", &raw.currency),
                ("source", &raw.source),
                ("note", &raw.note),
            ];
            let mut texts: HashMap<&str, String> = HashMap::new();
            let mut bad = None;
            for (field, value) in fields {
                match value {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(s)) => {
                        texts.insert(field, s.clone());
                    }
                    Some(serde_json::Value::Number(n)) => {
                        texts.insert(field, n.to_string());
                    }
                    Some(other) => {
                        bad.get_or_insert((field, json_type(other)));
                    }
                }
            }
            if let Some((field, kind)) = bad {
                loader.error(format!(
                    "{place}, field `{field}`: is {kind}; a string or number was expected"
                ));
                continue;
            }
            let raw = RawFields::from_lookup(|field| texts.get(field).map(String::as_str));
            loader.add(Place::Index(index), &raw);
        }
        loader.finish()
    }

    fn push(&mut self, fact: Fact) {
        let observation = Observation {
            value: fact.value,
            source: fact.source,
            note: fact.note,
        };
        let previous = self
            .series
            .entry(fact.region)
            .or_default()
            .entry(fact.key)
            .or_default()
            .insert(fact.period, observation);
        if previous.is_none() {
            self.len += 1;
        }
    }

    /// Adds facts that were validated elsewhere (e.g. by the database store).
    pub fn extend(&mut self, facts: impl IntoIterator<Item = Fact>) {
        for fact in facts {
            self.push(fact);
        }
    }

    /// How many facts the set holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every fact, in no particular order.
    pub fn facts(&self) -> impl Iterator<Item = Fact> + '_ {
        self.series.iter().flat_map(|(region, series)| {
            series.iter().flat_map(move |(key, periods)| {
                periods.iter().map(move |(period, obs)| Fact {
                    region: *region,
                    period: *period,
                    key: key.clone(),
                    value: obs.value,
                    source: obs.source.clone(),
                    note: obs.note.clone(),
                })
            })
        })
    }

    /// The series keys a region has any fact for.
    pub fn keys(&self, region: &Region) -> impl Iterator<Item = &SeriesKey> {
        self.series.get(region).into_iter().flat_map(|s| s.keys())
    }

    /// The periods a region has facts for in one series.
    pub fn periods(&self, region: &Region, key: &SeriesKey) -> impl Iterator<Item = &Period> {
        self.series
            .get(region)
            .and_then(|s| s.get(key))
            .into_iter()
            .flat_map(|p| p.keys())
    }

    /// The value of a series in a period: its own fact, else the sum of the fewest facts
    /// whose periods tile it exactly; `None` when neither exists.
    pub fn find(&self, region: &Region, key: &SeriesKey, period: &Period) -> Option<Found> {
        let periods = self.series.get(region)?.get(key)?;
        if let Some(obs) = periods.get(period) {
            return Some(Found {
                value: obs.value,
                parts: vec![*period],
                sources: obs.source.iter().cloned().collect(),
                notes: obs.note.iter().cloned().collect(),
            });
        }
        let start = Period::new(period.year(), period.first_month(), period.first_month())?;
        let end = Period::new(period.year(), period.last_month(), 12)?;
        let inside: Vec<(&Period, &Observation)> =
            periods.range(start..=end).filter(|(p, _)| period.contains(p)).collect();
        tile(period, &inside)
    }
}

/// Finds the fewest periods among `inside` that cover `period` month by month without overlap.
fn tile(period: &Period, inside: &[(&Period, &Observation)]) -> Option<Found> {
    let first = period.first_month() as usize;
    let months = period.months() as usize;
    // best[m]: the fewest pieces covering the first m months, and the last piece taken.
    let mut best: Vec<Option<(usize, usize)>> = vec![None; months + 1];
    best[0] = Some((0, usize::MAX));
    for m in 0..months {
        let Some((count, _)) = best[m] else { continue };
        for (index, (p, _)) in inside.iter().enumerate() {
            if p.first_month() as usize == first + m {
                let next = m + p.months() as usize;
                if best[next].is_none_or(|(c, _)| count + 1 < c) {
                    best[next] = Some((count + 1, index));
                }
            }
        }
    }
    best[months]?;
    let mut found = Found {
        value: 0.0,
        parts: Vec::new(),
        sources: Vec::new(),
        notes: Vec::new(),
    };
    let mut m = months;
    while m > 0 {
        let (_, index) = best[m].expect("a tiled prefix");
        let (p, obs) = inside[index];
        found.value += obs.value;
        found.parts.push(*p);
        found.sources.extend(obs.source.iter().cloned());
        found.notes.extend(obs.note.iter().cloned());
        m -= p.months() as usize;
    }
    found.parts.reverse();
    found.sources.dedup();
    found.notes.dedup();
    Some(found)
}

/// Reads one CSV file's facts into `loader`; `file` is its index among the loader's names.
/// Fails at once only when the header is unusable; row errors are collected in the loader.
fn read_csv(loader: &mut Loader, file: usize, reader: impl Read) -> Result<(), FactError> {
    let name = loader.names[file].clone();
    let invalid = |message: String| FactError {
        kind: FactErrorKind::Invalid,
        message,
    };
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| invalid(format!("{name}: cannot read the header line: {e}")))?
        .clone();
    let column = |field: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(field));
    let mut columns = HashMap::new();
    for field in [
        "region", "period", "partner", "flow", "product", "value", "currency", "source", "note",
    ] {
        if let Some(at) = column(field) {
            columns.insert(field, at);
        }
    }
    let missing: Vec<&str> = ["region", "period", "flow", "value", "currency"]
        .into_iter()
        .filter(|f| !columns.contains_key(f))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "{name} line 1: the header lacks the column(s) {}; expected region,period,partner,flow,product,value,currency",
            missing.join(", ")
        )));
    }
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let raw = RawFields::from_lookup(|field| columns.get(field).and_then(|&at| record.get(at)));
                loader.add(Place::Line { file, line }, &raw);
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let why = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_string(),
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("has {len} fields where the header has {expected_len}")
                    }
                    _ => e.to_string(),
                };
                loader.error(format!("{name} line {line}: {why}"));
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// How messages name a JSON value's type: `an array`, `a number`...
pub fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "region,period,partner,flow,product,value,currency\n";

    fn load(body: &str) -> Result<FactSet, FactError> {
        FactSet::from_csv_reader("facts.csv", format!("{HEADER}{body}").as_bytes())
    }

    fn world(flow: Flow) -> SeriesKey {
        SeriesKey::headline(flow, Currency::CNY)
    }

    #[test]
    fn loads_valid_facts_and_finds_them() {
        let set = load("Heilongjiang,2019-H1,World,total,all,93340000000,CNY\n黑龙江,2019-01..06,world,exports,ALL,16280000000,cny\n").unwrap();
        assert_eq!(set.len(), 2);
        let hlj = Region::parse("230000").unwrap();
        let h1 = Period::parse("2019-H1").unwrap();
        assert_eq!(set.find(&hlj, &world(Flow::Total), &h1).unwrap().value, 93340000000.0);
        assert_eq!(set.find(&hlj, &world(Flow::Exports), &h1).unwrap().value, 16280000000.0);
        assert!(set.find(&hlj, &world(Flow::Imports), &h1).is_none());
    }

    #[test]
    fn sums_the_fewest_tiles_of_a_period_without_its_own_fact() {
        let mut body = String::new();
        for m in 1..=6 {
            body.push_str(&format!("Jilin,2020-{m:02},World,total,all,{},USD\n", m * 10));
        }
        body.push_str("Jilin,2020-Q2,World,total,all,150,USD\n");
        let set = load(&body).unwrap();
        let jilin = Region::parse("Jilin").unwrap();
        let key = SeriesKey::headline(Flow::Total, Currency::USD);
        let found = set.find(&jilin, &key, &Period::parse("2020-H1").unwrap()).unwrap();
        assert_eq!(found.value, 10.0 + 20.0 + 30.0 + 150.0);
        assert_eq!(found.parts.len(), 4);
        assert!(set.find(&jilin, &key, &Period::parse("2020").unwrap()).is_none());
        assert_eq!(
            set.find(&jilin, &key, &Period::parse("2020-02..03").unwrap())
                .unwrap()
                .value,
            50.0
        );
    }

    #[test]
    fn identical_duplicates_are_one_fact_and_conflicting_ones_an_error() {
        let set = load("Jilin,2020,World,total,all,5,USD\nJilin,2020,World,total,all,5,USD\n").unwrap();
        assert_eq!(set.len(), 1);
        let err = load("Jilin,2020,World,total,all,5,USD\nJilin,2020,World,total,all,6,USD\n").unwrap_err();
        assert!(
            err.message.contains("facts.csv line 3, field `value`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("facts.csv line 2"), "{}", err.message);
    }

    #[test]
    fn an_inconsistent_total_names_the_three_facts() {
        let err = load("Jilin,2020,World,total,all,100,USD\nJilin,2020,World,exports,all,40,USD\nJilin,2020,World,imports,all,50,USD\n")
            .unwrap_err();
        assert_eq!(err.kind, FactErrorKind::Inconsistent);
        for place in ["line 2", "line 3", "line 4"] {
            assert!(err.message.contains(place), "{}", err.message);
        }
        // Within 0.5 % is fine.
        load("Jilin,2020,World,total,all,100,USD\nJilin,2020,World,exports,all,40,USD\nJilin,2020,World,imports,all,60.4,USD\n")
            .unwrap();
    }

    #[test]
    fn inline_facts_are_named_by_index() {
        let raw: Vec<RawFact> = serde_json::from_str(
            r#"[{"region":"Jilin","period":"2020","flow":"total","value":5,"currency":"USD"},
                {"region":"Jilin","period":"2020","flow":"total","value":[1],"currency":"USD"}]"#,
        )
        .unwrap();
        let err = FactSet::from_inline(&raw).unwrap_err();
        assert!(
            err.message.starts_with("facts[1], field `value`: is an array"),
            "{}",
            err.message
        );
    }

    #[test]
    fn every_malformed_value_is_named() {
        for (value, expected) in [
            ("-1", "negative"),
            ("abc", "not a number"),
            ("1,000", "CSV"), // shifts the columns
            ("NaN", "not a number"),
            ("inf", "not a number"),
            ("1e300", "larger than"),
            ("0x10", "not a number"),
        ] {
            let body = if value.contains(',') {
                format!("Jilin,2020,World,total,all,\"{value}\",USD\n")
            } else {
                format!("Jilin,2020,World,total,all,{value},USD\n")
            };
            let err = load(&body).unwrap_err().message;
            let expected = if expected == "CSV" { "not a number" } else { expected };
            assert!(
                err.contains("field `value`") && err.contains(expected),
                "{value}: {err}"
            );
        }
    }
}
