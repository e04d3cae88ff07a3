//! How figures are written in each language: amounts with their scale words (93.34 billion
//! yuan, 933.4亿元), rates to one decimal, growth and gaps as phrases, and period names.
//! Pure functions; the templates call them as filters (see `template.rs`).

use serde::{Deserialize, Serialize};

use crate::period::{Period, PeriodKind};

/// The languages bulletins are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Zh,
}

impl Language {
    /// Parses `en` or `zh` in any case.
    pub fn parse(text: &str) -> Option<Language> {
        match text.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Language::En),
            "zh" => Some(Language::Zh),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Zh => "zh",
        }
    }
}

/// Formats `x` with at most `decimals` decimals, dropping trailing zeros (4.20 → 4.2).
fn trimmed(x: f64, decimals: usize) -> String {
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Groups the digits of a whole number by thousands (1,234,567).
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// Writes an amount of money as a statistics office does: `93.34 billion yuan`,
/// `$13.57 billion`, `933.4亿元`, `135.7亿美元`.
pub fn money(value: f64, currency: &str, language: Language) -> String {
    match language {
        Language::En => money_en(value, currency),
        Language::Zh => money_zh(value, currency),
    }
}

fn money_en(value: f64, currency: &str) -> String {
    let magnitude = value.abs();
    let number = if magnitude >= 1e12 {
        format!("{} trillion", trimmed(value / 1e12, 2))
    } else if magnitude >= 1e9 {
        format!("{} billion", trimmed(value / 1e9, 2))
    } else if magnitude >= 1e6 {
        format!("{} million", trimmed(value / 1e6, 2))
    } else {
        grouped(value)
    };
    match currency {
        "CNY" => format!("{number} yuan"),
        "USD" if value < 0.0 => format!("-${}", number.trim_start_matches('-')),
        "USD" => format!("${number}"),
        other => format!("{number} {other}"),
    }
}

fn money_zh(value: f64, currency: &str) -> String {
    let unit = match currency {
        "CNY" => "元",
        "USD" => "美元",
        "EUR" => "欧元",
        "JPY" => "日元",
        "KRW" => "韩元",
        "RUB" => "卢布",
        "HKD" => "港元",
        "GBP" => "英镑",
        other => other,
    };
    let magnitude = value.abs();
    if magnitude >= 1e12 {
        format!("{}万亿{unit}", trimmed(value / 1e12, 2))
    } else if magnitude >= 1e8 {
        format!("{}亿{unit}", trimmed(value / 1e8, 1))
    } else if magnitude >= 1e4 {
        format!("{}万{unit}", trimmed(value / 1e4, 1))
    } else {
        format!("{}{unit}", trimmed(value, 0))
    }
}

/// The unit of table columns: `billion yuan`, `亿美元`.
pub fn table_unit(currency: &str, language: Language) -> String {
    match (language, currency) {
        (Language::En, "CNY") => "billion yuan".to_string(),
        (Language::En, "USD") => "billion US dollars".to_string(),
        (Language::En, other) => format!("billion {other}"),
        (Language::Zh, other) => money_zh(1e8, other).trim_start_matches('1').to_string(),
    }
}

/// A rate to one decimal, without its sign (`21.5`); the phrase says the direction.
pub fn rate(x: f64) -> String {
    format!("{:.1}", x.abs())
}

/// A growth rate as a phrase: `a year-on-year increase of 21.5 percent`, `a year-on-year
/// decrease of 3.3 percent`, `year-on-year growth of 1.4 times`; `同比增长21.5%`,
/// `同比下降3.3%`, `同比增长1.4倍`.
pub fn growth(growth_pct: f64, times: Option<f64>, language: Language) -> String {
    match (language, times) {
        (Language::En, Some(t)) => format!("year-on-year growth of {} times", trimmed(t, 1)),
        (Language::Zh, Some(t)) => format!("同比增长{}倍", trimmed(t, 1)),
        (Language::En, None) if growth_pct > 0.0 => {
            format!("a year-on-year increase of {} percent", rate(growth_pct))
        }
        (Language::En, None) if growth_pct < 0.0 => {
            format!("a year-on-year decrease of {} percent", rate(growth_pct))
        }
        (Language::En, None) => "unchanged year on year".to_string(),
        (Language::Zh, None) if growth_pct > 0.0 => format!("同比增长{}%", rate(growth_pct)),
        (Language::Zh, None) if growth_pct < 0.0 => format!("同比下降{}%", rate(growth_pct)),
        (Language::Zh, None) => "同比持平".to_string(),
    }
}

/// A gap to the national rate: `17.6 percentage points higher than the average national
/// growth rate`; `高于全国平均增速17.6个百分点`.
pub fn gap(gap_pp: f64, language: Language) -> String {
    match language {
        Language::En if gap_pp > 0.0 => {
            format!(
                "{} percentage points higher than the average national growth rate",
                rate(gap_pp)
            )
        }
        Language::En if gap_pp < 0.0 => {
            format!(
                "{} percentage points lower than the average national growth rate",
                rate(gap_pp)
            )
        }
        Language::En => "in line with the average national growth rate".to_string(),
        Language::Zh if gap_pp > 0.0 => format!("高于全国平均增速{}个百分点", rate(gap_pp)),
        Language::Zh if gap_pp < 0.0 => format!("低于全国平均增速{}个百分点", rate(gap_pp)),
        Language::Zh => "与全国平均增速持平".to_string(),
    }
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const ORDINALS_EN: [&str; 4] = ["first", "second", "third", "fourth"];
const COUNTS_EN: [&str; 12] = [
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
];
const QUARTERS_ZH: [&str; 4] = ["一", "二", "三", "四"];

/// The period as a phrase: `the first half of 2019`, `June 2019`, `the first seven months
/// of 2019`; `2019年上半年`, `2019年6月`, `2019年1-7月`.
pub fn period_name(period: &Period, language: Language) -> String {
    let year = period.year();
    let (first, last) = (period.first_month() as usize, period.last_month() as usize);
    match (language, period.kind()) {
        (Language::En, PeriodKind::Year) => format!("{year}"),
        (Language::En, PeriodKind::Half(h)) => {
            format!("the {} half of {year}", ORDINALS_EN[h as usize - 1])
        }
        (Language::En, PeriodKind::Quarter(q)) => {
            format!("the {} quarter of {year}", ORDINALS_EN[q as usize - 1])
        }
        (Language::En, PeriodKind::Month(m)) => format!("{} {year}", MONTHS_EN[m as usize - 1]),
        (Language::En, PeriodKind::Months(1, _)) => {
            format!("the first {} months of {year}", COUNTS_EN[last - 1])
        }
        (Language::En, PeriodKind::Months(..)) => {
            format!("{} to {} {year}", MONTHS_EN[first - 1], MONTHS_EN[last - 1])
        }
        (Language::Zh, PeriodKind::Year) => format!("{year}年"),
        (Language::Zh, PeriodKind::Half(1)) => format!("{year}年上半年"),
        (Language::Zh, PeriodKind::Half(_)) => format!("{year}年下半年"),
        (Language::Zh, PeriodKind::Quarter(q)) => {
            format!("{year}年第{}季度", QUARTERS_ZH[q as usize - 1])
        }
        (Language::Zh, PeriodKind::Month(m)) => format!("{year}年{m}月"),
        (Language::Zh, PeriodKind::Months(..)) => format!("{year}年{first}-{last}月"),
    }
}

/// A short label for tables and charts: `2019-H1` in English, `2019年上半年` in Chinese.
pub fn period_label(period: &Period, language: Language) -> String {
    match language {
        Language::En => period.to_string(),
        Language::Zh => period_name(period, language),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Period {
        Period::parse(s).unwrap()
    }

    #[test]
    fn writes_money_as_the_seed_bulletin_does() {
        assert_eq!(money(93_340_000_000.0, "CNY", Language::En), "93.34 billion yuan");
        assert_eq!(money(4_200_000_000.0, "CNY", Language::En), "4.2 billion yuan");
        assert_eq!(money(13_570_000_000.0, "USD", Language::En), "$13.57 billion");
        assert_eq!(money(14_670_000_000_000.0, "CNY", Language::En), "14.67 trillion yuan");
        assert_eq!(money(-60_070_000_000.0, "USD", Language::En), "-$60.07 billion");
        assert_eq!(money(950_000.0, "EUR", Language::En), "950,000 EUR");
        assert_eq!(money(93_340_000_000.0, "CNY", Language::Zh), "933.4亿元");
        assert_eq!(money(4_200_000_000.0, "CNY", Language::Zh), "42亿元");
        assert_eq!(money(27_108_644_974.0, "USD", Language::Zh), "271.1亿美元");
        assert_eq!(money(14_670_000_000_000.0, "CNY", Language::Zh), "14.67万亿元");
    }

    #[test]
    fn phrases_follow_the_sign() {
        assert_eq!(
            growth(21.5, None, Language::En),
            "a year-on-year increase of 21.5 percent"
        );
        assert_eq!(
            growth(-3.3, None, Language::En),
            "a year-on-year decrease of 3.3 percent"
        );
        assert_eq!(
            growth(140.0, Some(1.4), Language::En),
            "year-on-year growth of 1.4 times"
        );
        assert_eq!(growth(21.5, None, Language::Zh), "同比增长21.5%");
        assert_eq!(growth(-3.3, None, Language::Zh), "同比下降3.3%");
        assert_eq!(
            gap(17.6, Language::En),
            "17.6 percentage points higher than the average national growth rate"
        );
        assert_eq!(
            gap(-2.0, Language::En),
            "2.0 percentage points lower than the average national growth rate"
        );
        assert_eq!(gap(17.6, Language::Zh), "高于全国平均增速17.6个百分点");
        assert_eq!(gap(0.0, Language::Zh), "与全国平均增速持平");
    }

    #[test]
    fn names_periods() {
        assert_eq!(period_name(&p("2019-H1"), Language::En), "the first half of 2019");
        assert_eq!(period_name(&p("2019-Q3"), Language::En), "the third quarter of 2019");
        assert_eq!(period_name(&p("2019-06"), Language::En), "June 2019");
        assert_eq!(
            period_name(&p("2019-01..07"), Language::En),
            "the first seven months of 2019"
        );
        assert_eq!(period_name(&p("2019-02..04"), Language::En), "February to April 2019");
        assert_eq!(period_name(&p("2019-H1"), Language::Zh), "2019年上半年");
        assert_eq!(period_name(&p("2019-01..07"), Language::Zh), "2019年1-7月");
        assert_eq!(period_name(&p("2019-Q4"), Language::Zh), "2019年第四季度");
    }
}
