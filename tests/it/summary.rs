//! `tradebulletin summary`: the seed bulletin's figures, annual summaries of every province,
//! tiling, missing data, and malformed facts files.

use tradebulletin::facts::FactSet;
use tradebulletin::period::Period;
use tradebulletin::region::Region;
use tradebulletin::summary::{round1, summarise};

use crate::helpers::{facts_file, run, run_ok};

#[test]
fn the_seed_summary_states_every_figure_of_the_bulletin() {
    let text = run_ok(&["summary", "--region", "Heilongjiang", "--period", "2019-H1"]);
    for figure in [
        "Total trade: 93.34 billion yuan",
        "increase of 21.5 percent; national 3.9 %, 17.6 percentage points higher",
        "Total in USD: $13.57 billion",
        "Exports: 16.28 billion yuan",
        "increase of 22.9 percent; national 6.1 %, 16.8 percentage points higher",
        "Imports: 77.06 billion yuan",
        "increase of 21.2 percent; national 1.4 %, 19.8 percentage points higher",
        "high-tech exports: 1.4 billion yuan, year-on-year growth of 1.4 times (140.0 %)",
        "Russia: total 64.27 billion yuan, a year-on-year increase of 20.3 percent, 68.9 % of the total",
        "exports 4.2 billion yuan, a year-on-year increase of 13.7 percent",
        "imports 60.07 billion yuan, a year-on-year increase of 20.8 percent",
        "EU: total 5.95 billion yuan, a year-on-year increase of 13.0 percent",
        "Japan: total 1.15 billion yuan, a year-on-year increase of 10.6 percent",
        "South Korea: total 1.32 billion yuan, a year-on-year increase of 9.5 percent",
    ] {
        assert!(text.contains(figure), "missing `{figure}` in:\n{text}");
    }
}

#[test]
fn the_json_summary_carries_the_figures_as_numbers() {
    let json = run_ok(&[
        "summary",
        "--region",
        "黑龙江省",
        "--period",
        "2019-01..06",
        "--format",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(s["period"], "2019-H1");
    assert_eq!(s["currency"], "CNY");
    assert_eq!(s["total"]["value"], 93_340_000_000.0);
    assert_eq!(s["total"]["growth_pct"], 21.5);
    assert_eq!(s["total"]["gap_pp"], 17.6);
    assert_eq!(s["exports"]["gap_pp"], 16.8);
    assert_eq!(s["imports"]["gap_pp"], 19.8);
    assert_eq!(s["balance"]["value"], 16_280_000_000.0 - 77_060_000_000.0);
    assert_eq!(s["other_currencies"][0]["currency"], "USD");
    assert_eq!(s["other_currencies"][0]["total"]["value"], 13_570_000_000.0);
    assert_eq!(s["other_currencies"][0]["total"]["growth_pct"], serde_json::Value::Null);
    assert_eq!(s["partners"][0]["name"], "Russia");
    assert_eq!(s["partners"][0]["share_pct"], 68.9);
    assert_eq!(s["products"][0]["amount"]["growth_times"], 1.4);
}

#[test]
fn heilongjiang_2019_in_dollars_from_the_nbs_figures() {
    let text = run_ok(&["summary", "--region", "230000", "--period", "2019"]);
    assert!(
        text.contains("Total trade: $27.11 billion (a year earlier $26.44 billion)"),
        "{text}"
    );
    assert!(
        text.contains("increase of 2.5 percent; national -1.0 %, 3.5 percentage points higher"),
        "{text}"
    );
    assert!(text.contains("sum of 31 provinces"), "{text}");
}

#[test]
fn every_province_has_an_annual_summary_with_the_national_gap_2017_to_2024() {
    let store = tradebulletin::store::builtin();
    for region in Region::all().filter(|r| !r.is_national()) {
        for year in 2017..=2024 {
            let s = summarise(&store, region, Period::year_of(year).unwrap()).unwrap();
            let total = s.total.unwrap_or_else(|| panic!("{region} {year} has a total"));
            let growth = total
                .amount
                .growth_pct
                .unwrap_or_else(|| panic!("{region} {year} has growth"));
            let national = total
                .national_growth_pct
                .unwrap_or_else(|| panic!("{region} {year} has national"));
            assert_eq!(total.gap_pp, Some(round1(growth - national)), "{region} {year}");
            assert!(
                s.partners.is_empty() && s.products.is_empty(),
                "annual data has no partners"
            );
        }
    }
}

#[test]
fn months_in_a_facts_file_answer_for_the_half_year_they_tile() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    for (year, value) in [(2020, 100), (2021, 130)] {
        for m in 1..=6 {
            rows.push_str(&format!("Jilin,{year}-{m:02},World,exports,all,{value},EUR\n"));
            rows.push_str(&format!("Jilin,{year}-{m:02},World,imports,all,{},EUR\n", value * 2));
        }
    }
    let path = facts_file(dir.path(), "months.csv", &rows);
    let json = run_ok(&[
        "summary",
        "--region",
        "jilin",
        "--period",
        "2021-H1",
        "--facts",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(s["currency"], "EUR");
    assert_eq!(s["exports"]["value"], 780.0);
    assert_eq!(s["exports"]["growth_pct"], 30.0);
    assert_eq!(s["total"]["value"], 2340.0, "the total is exports plus imports");
    assert_eq!(s["total"]["derived"], true);
    assert_eq!(s["has_national"], false);
    let text = run_ok(&[
        "summary",
        "--region",
        "jilin",
        "--period",
        "2021-Q2",
        "--facts",
        path.to_str().unwrap(),
    ]);
    assert!(text.contains("Exports: 390 EUR"), "{text}");
}

#[test]
fn a_period_with_no_data_fails_with_no_data_naming_it() {
    let output = run(&["summary", "--region", "Heilongjiang", "--period", "2030-Q1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no_data") && stderr.contains("Heilongjiang") && stderr.contains("2030-Q1"),
        "{stderr}"
    );
}

#[test]
fn malformed_facts_files_name_file_line_and_field() {
    let header = "region,period,partner,flow,product,value,currency\n";
    let ok = "Jilin,2020,World,total,all,100,USD\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown region",
            format!("{header}{ok}Atlantis,2020,World,total,all,1,USD\n"),
            "line 3, field `region`",
        ),
        (
            "empty region",
            format!("{header},2020,World,total,all,1,USD\n"),
            "line 2, field `region`: is missing",
        ),
        (
            "bad period",
            format!("{header}Jilin,2020-H3,World,total,all,1,USD\n"),
            "line 2, field `period`",
        ),
        (
            "month 13",
            format!("{header}Jilin,2020-13,World,total,all,1,USD\n"),
            "field `period`",
        ),
        (
            "backwards range",
            format!("{header}Jilin,2020-09..03,World,total,all,1,USD\n"),
            "field `period`",
        ),
        (
            "negative",
            format!("{header}Jilin,2020,World,total,all,-5,USD\n"),
            "field `value`: `-5` is negative",
        ),
        (
            "text value",
            format!("{header}Jilin,2020,World,total,all,lots,USD\n"),
            "`lots` is not a number",
        ),
        (
            "empty value",
            format!("{header}Jilin,2020,World,total,all,,USD\n"),
            "field `value`: is missing",
        ),
        (
            "NaN",
            format!("{header}Jilin,2020,World,total,all,NaN,USD\n"),
            "field `value`",
        ),
        (
            "huge",
            format!("{header}Jilin,2020,World,total,all,1e40,USD\n"),
            "larger than",
        ),
        (
            "thousands separator",
            format!("{header}Jilin,2020,World,total,all,\"1,000\",USD\n"),
            "not a number",
        ),
        (
            "unknown flow",
            format!("{header}Jilin,2020,World,re-exports,all,1,USD\n"),
            "field `flow`",
        ),
        (
            "unknown currency",
            format!("{header}Jilin,2020,World,total,all,1,XYZ\n"),
            "field `currency`: `XYZ`",
        ),
        (
            "no currency",
            format!("{header}Jilin,2020,World,total,all,1,\n"),
            "field `currency`: is missing",
        ),
        (
            "conflicting duplicate",
            format!("{header}{ok}Jilin,2020,World,total,all,101,USD\n"),
            "line 3, field `value`",
        ),
        (
            "inconsistent total",
            format!("{header}{ok}Jilin,2020,World,exports,all,10,USD\nJilin,2020,World,imports,all,10,USD\n"),
            "differs from exports",
        ),
        (
            "missing column",
            "region,period,flow,value\nJilin,2020,total,1\n".to_string(),
            "lacks the column(s) currency",
        ),
        (
            "short row",
            format!("{header}Jilin,2020,World,total\n"),
            "line 2: has 4 fields",
        ),
        (
            "long partner",
            format!("{header}Jilin,2020,{},total,all,1,USD\n", "P".repeat(500)),
            "field `partner`: is 500 characters",
        ),
        (
            "invalid UTF-8",
            format!("{header}Jilin,2020,World,total,all,1,USD\n"),
            "not valid UTF-8",
        ),
        ("empty file", String::new(), "lacks the column"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (index, (what, body, needle)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{index}.csv"));
        let mut bytes = body.into_bytes();
        if what == "invalid UTF-8" {
            bytes.extend_from_slice(b"Jilin,2021,World,total,all,1,US\xffD\n");
        }
        std::fs::write(&path, bytes).unwrap();
        let output = run(&[
            "summary",
            "--region",
            "Jilin",
            "--period",
            "2020",
            "--facts",
            path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: accepted");
        assert!(stderr.contains(needle), "{what}: `{needle}` not in {stderr}");
        assert!(
            stderr.contains(&format!("case{index}.csv")),
            "{what}: the file is not named in {stderr}"
        );
    }
}

#[test]
fn a_csv_with_one_bad_row_loads_nothing_and_names_the_row() {
    // A bad row anywhere means nothing is loaded: the error, not a partial set.
    let body = "region,period,partner,flow,product,value,currency\nJilin,2020,World,exports,all,1,USD\nJilin,2020,World,total,all,x,USD\n";
    let error = FactSet::from_csv_reader("t.csv", body.as_bytes()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("t.csv line 3, field `value`"), "{message}");
}
