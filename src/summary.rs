//! The regional trade summary: from a [`FactSet`] to the figures a bulletin states.
//!
//! Rates are kept as printed, to one decimal, and a gap in percentage points is the
//! difference of the printed rates, so that the text adds up (22.9 − 6.1 = 16.8). A figure
//! with no facts behind it is `None`, never estimated; a section with no data is empty.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::facts::{self, Currency, FactSet, Flow, Found, SeriesKey};
use crate::period::Period;
use crate::region::Region;

/// The currencies preferred as a bulletin's main currency, in order; any other comes after.
const PREFERRED_CURRENCIES: [Currency; 2] = [Currency::CNY, Currency::USD];
/// Above this growth rate a bulletin also states growth as a multiple ("1.4 times").
const MULTIPLE_ABOVE_PCT: f64 = 100.0;

/// Why no summary could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SummaryError {
    /// The facts hold nothing for the region's trade in the period.
    #[error("{0}")]
    NoData(String),
    /// Figures found for the period contradict each other.
    #[error("{0}")]
    Inconsistent(String),
}

/// Everything a bulletin states about a region's trade in a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub region: RegionView,
    pub period: Period,
    pub period_months: u8,
    pub previous_period: Option<Period>,
    /// The main currency: all figures below are in it unless said otherwise.
    pub currency: Currency,
    pub total: Option<FlowFigure>,
    pub exports: Option<FlowFigure>,
    pub imports: Option<FlowFigure>,
    /// Exports less imports: positive is a surplus.
    pub balance: Option<Balance>,
    /// The same headline figures in other currencies where facts carry them.
    pub other_currencies: Vec<CurrencyFigures>,
    /// Every partner with figures in the period, largest total first.
    pub partners: Vec<PartnerFigure>,
    /// Product categories other than `all`, largest first.
    pub products: Vec<ProductFigure>,
    /// Whether the national comparison rests on national facts for this period.
    pub has_national: bool,
    /// Distinct sources of the facts used, in order of first use.
    pub sources: Vec<String>,
    /// Distinct notes on the facts used (back-computed, illustrative...).
    pub notes: Vec<String>,
}

/// The names of a region in both languages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionView {
    pub code: &'static str,
    pub name_en: &'static str,
    pub name_zh: &'static str,
    pub slug: String,
    pub is_national: bool,
}

impl From<Region> for RegionView {
    fn from(region: Region) -> RegionView {
        RegionView {
            code: region.code(),
            name_en: region.name_en(),
            name_zh: region.name_zh(),
            slug: region.slug(),
            is_national: region.is_national(),
        }
    }
}

/// A value, its year-ago twin and the growth between them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amount {
    /// In whole units of the currency.
    pub value: f64,
    /// The same period a year earlier, when known.
    pub previous: Option<f64>,
    /// Year-on-year growth in percent, to one decimal.
    pub growth_pct: Option<f64>,
    /// Growth as a multiple of the year-ago value (140 % is 1.4 times), above 100 % only.
    pub growth_times: Option<f64>,
}

/// A headline flow with the national comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowFigure {
    #[serde(flatten)]
    pub amount: Amount,
    /// The nation's growth for the same flow, period and currency, to one decimal.
    pub national_growth_pct: Option<f64>,
    /// Growth minus the national growth, in percentage points, both as printed.
    pub gap_pp: Option<f64>,
    /// True when the value is exports plus imports rather than a fact of its own.
    pub derived: bool,
}

/// Exports less imports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub value: f64,
    pub previous: Option<f64>,
}

/// The headline figures in one more currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurrencyFigures {
    pub currency: Currency,
    pub total: Option<Amount>,
    pub exports: Option<Amount>,
    pub imports: Option<Amount>,
}

/// One trading partner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartnerFigure {
    pub name: Arc<str>,
    pub total: Option<Amount>,
    pub exports: Option<Amount>,
    pub imports: Option<Amount>,
    /// The partner's total as a share of the region's total, in percent to one decimal.
    pub share_pct: Option<f64>,
}

/// One product category in one flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductFigure {
    pub product: Arc<str>,
    pub flow: Flow,
    pub amount: Amount,
}

/// Rounds to one decimal, the precision rates print at.
pub fn round1(x: f64) -> f64 {
    let rounded = (x * 10.0).round() / 10.0;
    if rounded == 0.0 { 0.0 } else { rounded }
}

/// Collects sources and notes in order of first use, without repeats.
#[derive(Default)]
struct Provenance {
    sources: Vec<String>,
    notes: Vec<String>,
}

impl Provenance {
    fn record(&mut self, found: &Found) {
        for source in &found.sources {
            if !self.sources.iter().any(|s| **s == **source) {
                self.sources.push(source.to_string());
            }
        }
        for note in &found.notes {
            if !self.notes.iter().any(|s| **s == **note) {
                self.notes.push(note.to_string());
            }
        }
    }
}

/// Looks up series of one region for one period and its year-ago twin.
struct Lookup<'a> {
    facts: &'a FactSet,
    region: Region,
    period: Period,
    previous: Option<Period>,
}

impl Lookup<'_> {
    fn amount(&self, key: &SeriesKey, provenance: &mut Provenance) -> Option<Amount> {
        let current = self.facts.find(&self.region, key, &self.period)?;
        provenance.record(&current);
        let previous = self.previous.and_then(|p| self.facts.find(&self.region, key, &p));
        if let Some(previous) = &previous {
            provenance.record(previous);
        }
        Some(amount(current.value, previous.map(|p| p.value)))
    }

    /// Total, exports and imports of one series family, the total derived from exports plus
    /// imports when it has no facts; fails when the three disagree.
    fn flows(
        &self,
        key: impl Fn(Flow) -> SeriesKey,
        provenance: &mut Provenance,
    ) -> Result<[Option<(Amount, bool)>; 3], SummaryError> {
        let total = self.amount(&key(Flow::Total), provenance);
        let exports = self.amount(&key(Flow::Exports), provenance);
        let imports = self.amount(&key(Flow::Imports), provenance);
        if let (Some(t), Some(e), Some(i)) = (&total, &exports, &imports) {
            let check = |t: f64, e: f64, i: f64, period: &Period| {
                if facts::consistent(t, e + i) {
                    Ok(())
                } else {
                    Err(SummaryError::Inconsistent(format!(
                        "{}: the total {t} differs from exports {e} plus imports {i} by more than 0.5 %",
                        facts::describe(&self.region, &key(Flow::Total), period)
                    )))
                }
            };
            check(t.value, e.value, i.value, &self.period)?;
            if let (Some(pt), Some(pe), Some(pi), Some(p)) = (t.previous, e.previous, i.previous, self.previous) {
                check(pt, pe, pi, &p)?;
            }
        }
        let total = match (total, &exports, &imports) {
            (Some(t), _, _) => Some((t, false)),
            (None, Some(e), Some(i)) => {
                let previous = e.previous.zip(i.previous).map(|(a, b)| a + b);
                Some((amount(e.value + i.value, previous), true))
            }
            _ => None,
        };
        Ok([total, exports.map(|e| (e, false)), imports.map(|i| (i, false))])
    }
}

fn amount(value: f64, previous: Option<f64>) -> Amount {
    let growth_pct = previous.filter(|p| *p > 0.0).map(|p| round1((value / p - 1.0) * 100.0));
    let growth_times = growth_pct
        .filter(|g| *g > MULTIPLE_ABOVE_PCT)
        .map(|g| round1(g / 100.0));
    Amount {
        value,
        previous,
        growth_pct,
        growth_times,
    }
}

/// Computes the summary of `region` in `period` from `facts`.
pub fn summarise(facts: &FactSet, region: Region, period: Period) -> Result<Summary, SummaryError> {
    let previous = period.year_earlier();
    let lookup = Lookup {
        facts,
        region,
        period,
        previous,
    };
    let currency = main_currency(&lookup).ok_or_else(|| no_data(facts, region, period))?;
    let mut provenance = Provenance::default();
    let headline = |flow| SeriesKey::headline(flow, currency);
    let [total, exports, imports] = lookup.flows(headline, &mut provenance)?;

    let national = Lookup {
        facts,
        region: Region::china(),
        period,
        previous,
    };
    let mut national_provenance = Provenance::default();
    let national_flows = if region.is_national() {
        [None, None, None]
    } else {
        national
            .flows(headline, &mut national_provenance)
            .unwrap_or([None, None, None])
    };
    let has_national = national_flows.iter().flatten().any(|(a, _)| a.growth_pct.is_some());
    let compare = |own: Option<(Amount, bool)>, nation: &Option<(Amount, bool)>| {
        own.map(|(amount, derived)| {
            let national_growth_pct = nation.as_ref().and_then(|(n, _)| n.growth_pct);
            let gap_pp = amount.growth_pct.zip(national_growth_pct).map(|(g, n)| round1(g - n));
            FlowFigure {
                amount,
                national_growth_pct,
                gap_pp,
                derived,
            }
        })
    };
    let total = compare(total, &national_flows[0]);
    let exports = compare(exports, &national_flows[1]);
    let imports = compare(imports, &national_flows[2]);
    if has_national {
        provenance.sources.extend(
            national_provenance
                .sources
                .into_iter()
                .filter(|s| !provenance.sources.contains(s))
                .collect::<Vec<_>>(),
        );
        provenance.notes.extend(
            national_provenance
                .notes
                .into_iter()
                .filter(|s| !provenance.notes.contains(s))
                .collect::<Vec<_>>(),
        );
    }
    let balance = exports.as_ref().zip(imports.as_ref()).map(|(e, i)| Balance {
        value: e.amount.value - i.amount.value,
        previous: e.amount.previous.zip(i.amount.previous).map(|(a, b)| a - b),
    });

    let other_currencies = other_currencies(&lookup, currency, &mut provenance)?;
    let partners = partners(
        &lookup,
        currency,
        total.as_ref().map(|t| t.amount.value),
        &mut provenance,
    )?;
    let products = products(&lookup, currency, &mut provenance);

    Ok(Summary {
        region: region.into(),
        period,
        period_months: period.months(),
        previous_period: previous,
        currency,
        total,
        exports,
        imports,
        balance,
        other_currencies,
        partners,
        products,
        has_national,
        sources: provenance.sources,
        notes: provenance.notes,
    })
}

/// The currencies in which the region has headline facts for the period, preferred first.
fn headline_currencies(lookup: &Lookup<'_>) -> Vec<Currency> {
    let mut currencies: BTreeSet<Currency> = BTreeSet::new();
    for key in lookup.facts.keys(&lookup.region) {
        if key.is_world() && key.is_all_products() && !currencies.contains(&key.currency) {
            let found = lookup.facts.find(&lookup.region, key, &lookup.period).is_some();
            if found {
                currencies.insert(key.currency);
            }
        }
    }
    let mut ordered: Vec<Currency> = PREFERRED_CURRENCIES
        .into_iter()
        .filter(|c| currencies.contains(c))
        .collect();
    ordered.extend(currencies.into_iter().filter(|c| !PREFERRED_CURRENCIES.contains(c)));
    ordered
}

/// The main currency: the first preferred currency with a total, else with any headline flow.
fn main_currency(lookup: &Lookup<'_>) -> Option<Currency> {
    let currencies = headline_currencies(lookup);
    let has_total = |c: &Currency| {
        let total = lookup
            .facts
            .find(&lookup.region, &SeriesKey::headline(Flow::Total, *c), &lookup.period)
            .is_some();
        let both = [Flow::Exports, Flow::Imports].iter().all(|f| {
            lookup
                .facts
                .find(&lookup.region, &SeriesKey::headline(*f, *c), &lookup.period)
                .is_some()
        });
        total || both
    };
    currencies.iter().find(|c| has_total(c)).or(currencies.first()).copied()
}

fn other_currencies(
    lookup: &Lookup<'_>,
    main: Currency,
    provenance: &mut Provenance,
) -> Result<Vec<CurrencyFigures>, SummaryError> {
    let mut figures = Vec::new();
    for currency in headline_currencies(lookup).into_iter().filter(|c| *c != main) {
        let [total, exports, imports] = lookup.flows(|flow| SeriesKey::headline(flow, currency), provenance)?;
        figures.push(CurrencyFigures {
            currency,
            total: total.map(|(a, _)| a),
            exports: exports.map(|(a, _)| a),
            imports: imports.map(|(a, _)| a),
        });
    }
    Ok(figures)
}

fn partners(
    lookup: &Lookup<'_>,
    currency: Currency,
    region_total: Option<f64>,
    provenance: &mut Provenance,
) -> Result<Vec<PartnerFigure>, SummaryError> {
    let names: BTreeSet<Arc<str>> = lookup
        .facts
        .keys(&lookup.region)
        .filter(|k| !k.is_world() && k.is_all_products() && k.currency == currency)
        .map(|k| k.partner.clone())
        .collect();
    let mut partners = Vec::new();
    for name in names {
        let key = |flow| SeriesKey {
            partner: name.clone(),
            flow,
            product: facts::ALL_PRODUCTS.into(),
            currency,
        };
        let [total, exports, imports] = lookup.flows(key, provenance)?;
        if total.is_none() && exports.is_none() && imports.is_none() {
            continue;
        }
        let share_pct = total
            .as_ref()
            .zip(region_total.filter(|t| *t > 0.0))
            .map(|((t, _), all)| round1(t.value / all * 100.0));
        partners.push(PartnerFigure {
            name,
            total: total.map(|(a, _)| a),
            exports: exports.map(|(a, _)| a),
            imports: imports.map(|(a, _)| a),
            share_pct,
        });
    }
    let size = |p: &PartnerFigure| {
        p.total.as_ref().map(|a| a.value).unwrap_or_else(|| {
            p.exports.as_ref().map_or(0.0, |a| a.value) + p.imports.as_ref().map_or(0.0, |a| a.value)
        })
    };
    partners.sort_by(|a, b| size(b).total_cmp(&size(a)).then_with(|| a.name.cmp(&b.name)));
    Ok(partners)
}

fn products(lookup: &Lookup<'_>, currency: Currency, provenance: &mut Provenance) -> Vec<ProductFigure> {
    let keys: BTreeSet<&SeriesKey> = lookup
        .facts
        .keys(&lookup.region)
        .filter(|k| k.is_world() && !k.is_all_products() && k.currency == currency)
        .collect();
    let mut products: Vec<ProductFigure> = keys
        .into_iter()
        .filter_map(|key| {
            lookup.amount(key, provenance).map(|amount| ProductFigure {
                product: key.product.clone(),
                flow: key.flow,
                amount,
            })
        })
        .collect();
    products.sort_by(|a, b| {
        b.amount
            .value
            .total_cmp(&a.amount.value)
            .then_with(|| a.product.cmp(&b.product))
            .then(a.flow.cmp(&b.flow))
    });
    products
}

/// Says what is missing, and which periods the region does have, so the user can act.
fn no_data(facts: &FactSet, region: Region, period: Period) -> SummaryError {
    let mut periods: BTreeSet<Period> = BTreeSet::new();
    let mut keys = 0;
    for key in facts.keys(&region).filter(|k| k.is_world() && k.is_all_products()) {
        keys += 1;
        periods.extend(facts.periods(&region, key).copied());
    }
    let available = if keys == 0 {
        format!("the data has no trade totals for {region} at all")
    } else {
        let listed: Vec<String> = periods.iter().rev().take(12).map(Period::to_string).collect();
        format!("the data has {region} for {}", listed.join(", "))
    };
    SummaryError::NoData(format!(
        "no trade total, exports or imports of {region} (partner World, all products) for {period}, \
         nor for finer periods that tile it; {available}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(body: &str) -> FactSet {
        let csv = format!("region,period,partner,flow,product,value,currency\n{body}");
        FactSet::from_csv_reader("test.csv", csv.as_bytes()).unwrap()
    }

    fn summary(set: &FactSet, region: &str, period: &str) -> Result<Summary, SummaryError> {
        summarise(set, Region::parse(region).unwrap(), Period::parse(period).unwrap())
    }

    #[test]
    fn computes_growth_and_the_gap_from_printed_rates() {
        let set = facts(
            "Jilin,2020,World,exports,all,1229,USD\nJilin,2019,World,exports,all,1000,USD\n\
             China,2020,World,exports,all,1061,USD\nChina,2019,World,exports,all,1000,USD\n",
        );
        let s = summary(&set, "Jilin", "2020").unwrap();
        let exports = s.exports.unwrap();
        assert_eq!(exports.amount.growth_pct, Some(22.9));
        assert_eq!(exports.national_growth_pct, Some(6.1));
        assert_eq!(exports.gap_pp, Some(16.8));
        assert!(s.total.is_none(), "no total without imports");
        assert!(s.balance.is_none());
        assert!(s.has_national);
    }

    #[test]
    fn leaves_out_what_is_missing() {
        let set = facts("Jilin,2020,World,total,all,100,USD\n");
        let s = summary(&set, "Jilin", "2020").unwrap();
        let total = s.total.unwrap();
        assert_eq!(total.amount.previous, None);
        assert_eq!(total.amount.growth_pct, None);
        assert_eq!(total.national_growth_pct, None);
        assert!(s.partners.is_empty() && s.products.is_empty() && !s.has_national);
    }

    #[test]
    fn states_growth_above_100_percent_as_a_multiple_and_declines_as_negative() {
        let set = facts(
            "Jilin,2020,World,exports,high-tech,240,USD\nJilin,2019,World,exports,high-tech,100,USD\n\
             Jilin,2020,World,total,all,90,USD\nJilin,2019,World,total,all,100,USD\n",
        );
        let s = summary(&set, "Jilin", "2020").unwrap();
        assert_eq!(s.products[0].amount.growth_pct, Some(140.0));
        assert_eq!(s.products[0].amount.growth_times, Some(1.4));
        assert_eq!(s.total.unwrap().amount.growth_pct, Some(-10.0));
    }

    #[test]
    fn a_period_without_data_names_what_is_missing() {
        let set = facts("Jilin,2020,World,total,all,100,USD\n");
        let SummaryError::NoData(message) = summary(&set, "Jilin", "2021-H1").unwrap_err() else {
            panic!("expected no data")
        };
        assert!(
            message.contains("Jilin") && message.contains("2021-H1") && message.contains("2020"),
            "{message}"
        );
        let SummaryError::NoData(message) = summary(&set, "Hebei", "2020").unwrap_err() else {
            panic!("expected no data")
        };
        assert!(message.contains("no trade totals for Hebei"), "{message}");
    }

    #[test]
    fn months_tile_a_half_year() {
        let mut body = String::new();
        for m in 1..=6 {
            body.push_str(&format!(
                "Jilin,2020-{m:02},World,total,all,10,USD\nJilin,2019-{m:02},World,total,all,8,USD\n"
            ));
        }
        let s = summary(&facts(&body), "Jilin", "2020-H1").unwrap();
        let total = s.total.unwrap();
        assert_eq!(total.amount.value, 60.0);
        assert_eq!(total.amount.growth_pct, Some(25.0));
    }

    #[test]
    fn partners_come_largest_first_with_their_share() {
        let set = facts(
            "Jilin,2020,World,total,all,200,USD\nJilin,2020,Japan,total,all,20,USD\n\
             Jilin,2020,Russia,exports,all,30,USD\nJilin,2020,Russia,imports,all,70,USD\n",
        );
        let s = summary(&set, "Jilin", "2020").unwrap();
        let names: Vec<&str> = s.partners.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["Russia", "Japan"]);
        assert_eq!(s.partners[1].share_pct, Some(10.0));
    }
}
