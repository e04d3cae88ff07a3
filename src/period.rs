//! Reporting periods: the grammar of the contract (`2019`, `2019-H1`, `2019-Q3`, `2019-06`,
//! `2019-01..07`), the normalised form, the same period a year earlier, and tiling.
//!
//! A period is a run of whole months within one calendar year. Two spellings of the same
//! months are the same period: `2019-01..06` normalises to `2019-H1`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The earliest and latest years a period may name.
pub const YEARS: std::ops::RangeInclusive<i32> = 1950..=2100;

/// A run of months `first..=last` within `year`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    first: u8,
    last: u8,
}

/// What kind of period this is, decided by its months alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Year,
    Half(u8),
    Quarter(u8),
    Month(u8),
    /// Months `first..=last` that are none of the above.
    Months(u8, u8),
}

/// Why a period could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period `{input}` is not valid: {reason} (expected 2019, 2019-H1, 2019-Q3, 2019-06 or 2019-01..07)")]
pub struct PeriodError {
    input: String,
    reason: &'static str,
}

impl Period {
    /// Builds the period of months `first..=last` of `year`, if that is a valid run.
    pub fn new(year: i32, first: u8, last: u8) -> Option<Period> {
        let valid = YEARS.contains(&year) && (1..=12).contains(&first) && (first..=12).contains(&last);
        valid.then_some(Period { year, first, last })
    }

    /// The whole calendar year.
    pub fn year_of(year: i32) -> Option<Period> {
        Period::new(year, 1, 12)
    }

    /// Parses a period in any spelling of the contract, trimming surrounding spaces.
    pub fn parse(input: &str) -> Result<Period, PeriodError> {
        let fail = |reason| PeriodError {
            input: truncate(input, 40),
            reason,
        };
        let text = input.trim();
        let (year_text, rest) = match text.split_once('-') {
            Some((y, r)) => (y, Some(r)),
            None => (text, None),
        };
        if year_text.len() != 4 || !year_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the year must be four digits"));
        }
        let year: i32 = year_text.parse().map_err(|_| fail("the year is not a number"))?;
        if !YEARS.contains(&year) {
            return Err(fail("the year is out of range 1950-2100"));
        }
        let Some(rest) = rest else {
            return Ok(Period {
                year,
                first: 1,
                last: 12,
            });
        };
        let upper = rest.to_ascii_uppercase();
        let (first, last) = if let Some(n) = upper.strip_prefix('H') {
            match n {
                "1" => (1, 6),
                "2" => (7, 12),
                _ => return Err(fail("a half is H1 or H2")),
            }
        } else if let Some(n) = upper.strip_prefix('Q') {
            match n {
                "1" | "2" | "3" | "4" => {
                    let q: u8 = n.parse().expect("a digit");
                    (q * 3 - 2, q * 3)
                }
                _ => return Err(fail("a quarter is Q1 to Q4")),
            }
        } else if let Some((a, b)) = upper.split_once("..") {
            let first = parse_month(a).ok_or_else(|| fail("a month is 01 to 12"))?;
            let last = parse_month(b).ok_or_else(|| fail("a month is 01 to 12"))?;
            if last < first {
                return Err(fail("a month range must not run backwards"));
            }
            (first, last)
        } else {
            let month = parse_month(&upper).ok_or_else(|| fail("a month is 01 to 12"))?;
            (month, month)
        };
        Ok(Period { year, first, last })
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    /// The first month, 1 to 12.
    pub fn first_month(&self) -> u8 {
        self.first
    }

    /// The last month, 1 to 12.
    pub fn last_month(&self) -> u8 {
        self.last
    }

    /// How many months the period spans.
    pub fn months(&self) -> u8 {
        self.last - self.first + 1
    }

    pub fn kind(&self) -> PeriodKind {
        match (self.first, self.last) {
            (1, 12) => PeriodKind::Year,
            (1, 6) => PeriodKind::Half(1),
            (7, 12) => PeriodKind::Half(2),
            (f, l) if f == l => PeriodKind::Month(f),
            (f, l) if l == f + 2 && f % 3 == 1 => PeriodKind::Quarter(f.div_ceil(3)),
            (f, l) => PeriodKind::Months(f, l),
        }
    }

    /// The same months one year earlier, if that year is still in range.
    pub fn year_earlier(&self) -> Option<Period> {
        Period::new(self.year - 1, self.first, self.last)
    }

    /// Whether `other` lies wholly within this period.
    pub fn contains(&self, other: &Period) -> bool {
        self.year == other.year && self.first <= other.first && other.last <= self.last
    }

    /// The single months that tile this period, in order.
    pub fn month_tiles(&self) -> impl Iterator<Item = Period> + '_ {
        (self.first..=self.last).map(|m| Period {
            year: self.year,
            first: m,
            last: m,
        })
    }

    /// The quarters that tile this period, if it is made of whole quarters.
    pub fn quarter_tiles(&self) -> Option<Vec<Period>> {
        if self.first % 3 != 1 || !self.last.is_multiple_of(3) {
            return None;
        }
        Some(
            (self.first..=self.last)
                .step_by(3)
                .map(|m| Period {
                    year: self.year,
                    first: m,
                    last: m + 2,
                })
                .collect(),
        )
    }
}

fn parse_month(text: &str) -> Option<u8> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month: u8 = text.parse().ok()?;
    (1..=12).contains(&month).then_some(month)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            PeriodKind::Year => write!(f, "{}", self.year),
            PeriodKind::Half(h) => write!(f, "{}-H{h}", self.year),
            PeriodKind::Quarter(q) => write!(f, "{}-Q{q}", self.year),
            PeriodKind::Month(m) => write!(f, "{}-{m:02}", self.year),
            PeriodKind::Months(a, b) => write!(f, "{}-{a:02}..{b:02}", self.year),
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s)
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Period {
        Period::parse(s).unwrap()
    }

    #[test]
    fn parses_every_spelling_of_the_contract() {
        assert_eq!(p("2019").to_string(), "2019");
        assert_eq!(p("2019-H1").to_string(), "2019-H1");
        assert_eq!(p("2019-h2").to_string(), "2019-H2");
        assert_eq!(p("2019-Q3").to_string(), "2019-Q3");
        assert_eq!(p("2019-06").to_string(), "2019-06");
        assert_eq!(p(" 2019-01..07 ").to_string(), "2019-01..07");
    }

    #[test]
    fn normalises_ranges_to_their_simplest_name() {
        assert_eq!(p("2019-01..06"), p("2019-H1"));
        assert_eq!(p("2019-07..12").to_string(), "2019-H2");
        assert_eq!(p("2019-01..12").to_string(), "2019");
        assert_eq!(p("2019-04..06").to_string(), "2019-Q2");
        assert_eq!(p("2019-05..05").to_string(), "2019-05");
        assert_eq!(p("2019-02..04").to_string(), "2019-02..04");
    }

    #[test]
    fn rejects_impossible_periods_with_a_reason() {
        for bad in [
            "",
            "19",
            "2019-H3",
            "2019-Q0",
            "2019-Q5",
            "2019-13",
            "2019-00",
            "2019-6",
            "2019-07..03",
            "2019-01..13",
            "20190",
            "abcd",
            "2019-",
            "0000",
            "9999",
            "2019-01..",
            "2019-W1",
            "-2019",
            "2019-01..07..09",
            "２０１９",
        ] {
            let err = Period::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not valid"), "{bad}: {err}");
        }
    }

    #[test]
    fn knows_the_same_period_a_year_earlier() {
        assert_eq!(p("2019-H1").year_earlier(), Some(p("2018-H1")));
        assert_eq!(p("2019-01..07").year_earlier(), Some(p("2018-01..07")));
        assert_eq!(p("1950").year_earlier(), None);
    }

    #[test]
    fn tiles_into_quarters_only_when_aligned() {
        assert_eq!(p("2019-H1").quarter_tiles(), Some(vec![p("2019-Q1"), p("2019-Q2")]));
        assert_eq!(p("2019-02..04").quarter_tiles(), None);
        assert_eq!(
            p("2019-Q3").month_tiles().collect::<Vec<_>>(),
            vec![p("2019-07"), p("2019-08"), p("2019-09")]
        );
    }

    proptest! {
        #[test]
        fn format_and_parse_round_trip(year in 1950i32..=2100, a in 1u8..=12, len in 0u8..12) {
            let last = (a + len).min(12);
            let period = Period::new(year, a, last).unwrap();
            let text = period.to_string();
            prop_assert_eq!(Period::parse(&text).unwrap(), period);
            // The long spelling means the same months.
            let long = format!("{year}-{a:02}..{last:02}");
            prop_assert_eq!(Period::parse(&long).unwrap(), period);
        }

        #[test]
        fn month_tiles_cover_the_whole_exactly(year in 1950i32..=2100, a in 1u8..=12, len in 0u8..12) {
            let period = Period::new(year, a, (a + len).min(12)).unwrap();
            let tiles: Vec<Period> = period.month_tiles().collect();
            prop_assert_eq!(tiles.len() as u8, period.months());
            prop_assert!(tiles.iter().all(|t| period.contains(t) && t.months() == 1));
            prop_assert_eq!(tiles.first().unwrap().first_month(), period.first_month());
            prop_assert_eq!(tiles.last().unwrap().last_month(), period.last_month());
            if let Some(quarters) = period.quarter_tiles() {
                let months: u8 = quarters.iter().map(Period::months).sum();
                prop_assert_eq!(months, period.months());
            }
        }

        #[test]
        fn never_panics_on_any_input(text in "\\PC{0,20}") {
            let _ = Period::parse(&text);
        }
    }
}
