//! Bulletins through the real typst: the seed's figures in both languages, byte-identical
//! output, failures and timeouts, other provinces and currencies, and hostile names.

use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use tradebulletin::job::{self, ErrorCode, JobError};
use tradebulletin::narrative::Language;
use tradebulletin::render::RenderError;
use tradebulletin::store::Store;
use tradebulletin::summary::summarise;

use crate::helpers::{facts_file, pdf_bytes_text, pdf_text, renderer, run, run_ok, squeeze, typst, write_script};

fn issued() -> NaiveDate {
    NaiveDate::from_ymd_opt(2019, 7, 19).unwrap()
}

#[test]
fn the_seed_bulletin_pdf_states_every_figure_of_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("hlj.pdf");
    let typ = dir.path().join("src/hlj.typ");
    run_ok(&[
        "render",
        "--region",
        "Heilongjiang",
        "--period",
        "2019-H1",
        "--out",
        pdf.to_str().unwrap(),
        "--typst-out",
        typ.to_str().unwrap(),
    ]);
    let text = squeeze(&pdf_text(&pdf));
    for figure in [
        "reached 93.34 billion yuan ($13.57 billion) in the first half of 2019, a year-on-year increase of 21.5 percent, 17.6 percentage points higher than the average national growth rate",
        "Exports came in at 16.28 billion yuan, a year-on-year increase of 22.9 percent, 16.8 percentage points higher than the average national growth rate",
        "imports totaled 77.06 billion yuan, a year-on-year increase of 21.2 percent, 19.8 percentage points higher than the average national growth rate",
        "Advanced technological products were one of the highlights of Heilongjiang’s exports, with 1.4 billion yuan exported, representing year-on-year growth of 1.4 times",
        "accounting for 68.9 percent of the total",
        "Russia came in at 64.27 billion yuan, a year-on-year increase of 20.3 percent",
        "Exports to Russia accounted for 4.2 billion yuan, a year-on-year increase of 13.7 percent",
        "imports from Russia came to 60.07 billion yuan, a year-on-year increase of 20.8 percent",
        "the EU came to 5.95 billion yuan, a year-on-year increase of 13.0 percent",
        "Japan came to 1.15 billion yuan, a year-on-year increase of 10.6 percent",
        "South Korea came to 1.32 billion yuan, a year-on-year increase of 9.5 percent",
        "Main trading partners",
        "Notes on method and sources",
    ] {
        assert!(text.contains(figure), "missing `{figure}` in:\n{text}");
    }
    // The source written with --typst-out compiles again by hand with the same typst.
    let again = dir.path().join("again.pdf");
    let status = std::process::Command::new("typst")
        .args(["compile", "--ignore-system-fonts", "--font-path", "fonts/latin"])
        .arg(&typ)
        .arg(&again)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(squeeze(&pdf_text(&again)).contains("93.34 billion yuan"));
}

#[test]
fn the_chinese_bulletin_writes_figures_the_chinese_way() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("hlj-zh.pdf");
    run_ok(&[
        "render",
        "--region",
        "黑龙江",
        "--period",
        "2019-H1",
        "--lang",
        "zh",
        "--out",
        pdf.to_str().unwrap(),
    ]);
    let text: String = pdf_text(&pdf).split_whitespace().collect();
    for figure in [
        "2019年上半年，黑龙江省货物贸易进出口总值933.4亿元（135.7亿美元），同比增长21.5%，高于全国平均增速17.6个百分点",
        "出口162.8亿元，同比增长22.9%，高于全国平均增速16.8个百分点",
        "进口770.6亿元，同比增长21.2%，高于全国平均增速19.8个百分点",
        "高新技术产品出口14亿元，同比增长1.4倍",
        "对俄罗斯进出口642.7亿元，同比增长20.3%，占进出口总值的68.9%",
        "对俄罗斯出口42亿元，同比增长13.7%",
        "自俄罗斯进口600.7亿元，同比增长20.8%",
        "对欧盟进出口59.5亿元，同比增长13.0%",
    ] {
        assert!(text.contains(figure), "missing `{figure}` in:\n{text}");
    }
}

#[test]
fn the_same_request_renders_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = ["a.pdf", "b.pdf"].map(|n| dir.path().join(n));
    for (path, lang) in [(&a, "zh"), (&b, "zh")] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tradebulletin"));
        command.args([
            "render",
            "--region",
            "Heilongjiang",
            "--period",
            "2019-H1",
            "--lang",
            lang,
            "--out",
        ]);
        assert!(
            command
                .arg(path)
                .env("SOURCE_DATE_EPOCH", "1563494400")
                .status()
                .unwrap()
                .success()
        );
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let text = pdf_text(&a);
    assert!(
        text.contains("2019年7月19日"),
        "the issue date comes from SOURCE_DATE_EPOCH"
    );
}

#[tokio::test]
async fn a_typst_error_is_render_failed_with_the_diagnostic() {
    let error = typst(None, Duration::from_secs(60))
        .compile("= Title\n#let x = (\n", Language::En, 0)
        .await
        .unwrap_err();
    let error = JobError::from(RenderError::Compile(error));
    assert_eq!(error.code, ErrorCode::RenderFailed);
    assert!(!error.transient, "a template error is permanent");
    assert!(error.message.contains("bulletin.typ.j2"), "{}", error.message);
    assert!(error.message.contains("bulletin.typ:2:"), "{}", error.message);
    assert!(
        error.message.contains("generated line: `#let x = (`"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_hanging_compile_is_killed_at_the_timeout_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let stand_in = dir.path().join("typst");
    write_script(
        &stand_in,
        &format!("#!/bin/sh\necho $$ > {}\nexec sleep 600\n", pid_file.display()),
    );
    let started = std::time::Instant::now();
    let error = typst(Some(&stand_in), Duration::from_millis(500))
        .compile("x", Language::En, 0)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = JobError::from(RenderError::Compile(error));
    assert_eq!(error.code, ErrorCode::Timeout);
    assert!(error.transient);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc = Path::new("/proc").join(pid.trim());
    assert!(!proc.exists(), "the stand-in typst (pid {}) is still there", pid.trim());
}

#[tokio::test]
async fn a_crashing_typst_is_a_passing_render_failure() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("typst");
    write_script(&stand_in, "#!/bin/sh\necho 'out of memory' >&2\nkill -SEGV $$\n");
    let error = typst(Some(&stand_in), Duration::from_secs(10))
        .compile("x", Language::En, 0)
        .await
        .unwrap_err();
    let error = JobError::from(RenderError::Compile(error));
    assert_eq!(error.code, ErrorCode::RenderFailed);
    assert!(error.transient, "a crash may pass on a retry");
    assert!(error.message.contains("out of memory"), "{}", error.message);
}

#[test]
fn another_province_in_dollars_without_national_figures() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "\
Yunnan,2021-Q3,World,exports,all,5200000000,USD
Yunnan,2021-Q3,World,imports,all,4100000000,USD
Yunnan,2020-Q3,World,exports,all,4000000000,USD
Yunnan,2020-Q3,World,imports,all,4500000000,USD
Yunnan,2021-Q3,Myanmar,total,all,2500000000,USD
Yunnan,2020-Q3,Myanmar,total,all,2000000000,USD
Yunnan,2021-Q3,Vietnam,exports,all,900000000,USD
";
    let facts = facts_file(dir.path(), "yunnan.csv", rows);
    let pdf = dir.path().join("yunnan.pdf");
    run_ok(&[
        "render",
        "--region",
        "云南",
        "--period",
        "2021-Q3",
        "--facts",
        facts.to_str().unwrap(),
        "--out",
        pdf.to_str().unwrap(),
    ]);
    let text = squeeze(&pdf_text(&pdf));
    for expected in [
        "Foreign trade of Yunnan",
        "The third quarter of 2021",
        "reached $9.3 billion in the third quarter of 2021, a year-on-year increase of 9.4 percent.",
        "Exports came in at $5.2 billion, a year-on-year increase of 30.0 percent",
        "imports totaled $4.1 billion, a year-on-year decrease of 8.9 percent",
        "surplus of $1.1 billion",
        "Myanmar was the largest trading partner, accounting for 26.9 percent of the total",
        "billion US dollars",
        "No national figures for this period and currency were available",
        "Exports to Vietnam came to $900 million.",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("percentage points higher") && !text.contains("percentage points lower"));
}

#[test]
fn an_annual_totals_only_bulletin_has_no_partner_section() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("gd.pdf");
    run_ok(&[
        "render",
        "--region",
        "Guangdong",
        "--period",
        "2023",
        "--out",
        pdf.to_str().unwrap(),
    ]);
    let text = squeeze(&pdf_text(&pdf));
    assert!(
        text.contains("The total volume of imports and exports in Guangdong reached $"),
        "{text}"
    );
    assert!(text.contains("percentage points"), "{text}");
    assert!(
        !text.contains("Main trading partners") && !text.contains("Product highlights"),
        "{text}"
    );
}

#[test]
fn render_reports_the_error_code_and_leaves_no_pdf() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("none.pdf");
    let output = run(&[
        "render",
        "--region",
        "Hainan",
        "--period",
        "2031",
        "--out",
        pdf.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no_data"));
    assert!(!pdf.exists());
}

const HOSTILE: [&str; 9] = [
    "#read(\"/etc/passwd\")",
    "] #panic(\"x\") [",
    "$x$",
    "\\",
    "@ref",
    "<label>",
    "// comment",
    "*bold* _em_ `raw` = head",
    "#{ let x = 1 } \" \\u{41}",
];

#[tokio::test]
async fn names_full_of_typst_markup_print_as_text() {
    let mut facts = vec![
        serde_json::json!({"region": "Jilin", "period": "2020", "flow": "total", "value": 1000, "currency": "CNY"}),
    ];
    for (i, name) in HOSTILE.iter().enumerate() {
        let value = 100 - i as u64;
        facts.push(serde_json::json!({"region": "Jilin", "period": "2020", "partner": name, "flow": "total", "value": value, "currency": "CNY"}));
        facts.push(serde_json::json!({"region": "Jilin", "period": "2020", "product": name, "flow": "exports", "value": value, "currency": "CNY"}));
    }
    let body = serde_json::json!({"region": "Jilin", "period": "2020", "facts": facts}).to_string();
    let request = job::parse_request(body.as_bytes(), None, 1 << 20, || "hostile".into()).unwrap();
    let store = tradebulletin::store::builtin();
    let summary = job::summarise(&request, &Store::Memory(store)).await.unwrap();
    assert_eq!(summary.partners.len(), HOSTILE.len());
    for language in [Language::En, Language::Zh] {
        let bulletin = renderer().render(&summary, language, issued()).await.unwrap();
        let text = pdf_bytes_text(&bulletin.pdf);
        let flat = squeeze(&text);
        for name in HOSTILE {
            assert!(
                flat.contains(&squeeze(name)),
                "`{name}` is not printed as text ({language:?}):\n{flat}"
            );
        }
        assert!(!text.contains("root:"), "a file was read into the bulletin");
    }
}

#[test]
fn a_ten_thousand_character_name_is_refused_clearly() {
    let name = "A".repeat(10_000);
    let body = serde_json::json!({"region": "Jilin", "period": "2020", "facts": [
        {"region": "Jilin", "period": "2020", "partner": name, "flow": "total", "value": 1, "currency": "CNY"}
    ]})
    .to_string();
    let rejected = job::parse_request(body.as_bytes(), None, 1 << 20, || "long".into()).unwrap_err();
    assert_eq!(rejected.error.code, ErrorCode::InvalidRequest);
    assert!(
        rejected
            .error
            .message
            .contains("facts[0], field `partner`: is 10000 characters long"),
        "{}",
        rejected.error.message
    );
}

#[test]
fn the_seed_summary_renders_through_the_library_too() {
    let store = tradebulletin::store::builtin();
    let region = tradebulletin::region::Region::parse("Heilongjiang").unwrap();
    let period = tradebulletin::period::Period::parse("2019-H1").unwrap();
    let summary = summarise(&store, region, period).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bulletin = runtime
        .block_on(renderer().render(&summary, Language::En, issued()))
        .unwrap();
    assert!(bulletin.pdf.starts_with(b"%PDF-"));
    assert!(bulletin.source.contains("#import \"bulletin-lib.typ\""));
}

/// The fonts a PDF embeds, by name (pdffonts).
fn pdf_fonts(pdf: &Path) -> String {
    let output = std::process::Command::new("pdffonts").arg(pdf).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn any_chinese_name_prints_in_either_language() {
    // 香港 is in the GB 2312 core (fonts/cjk); 堃 is not (the complete Noto Sans CJK SC in
    // fonts/cjk-fallback has it); 𠀀 (Extension B) only HanaMin has.
    let dir = tempfile::tempdir().unwrap();
    let rows = "\
Yunnan,2021-Q3,World,exports,all,5200000000,USD
Yunnan,2021-Q3,World,imports,all,4100000000,USD
Yunnan,2021-Q3,香港,total,all,2500000000,USD
Yunnan,2021-Q3,堃𠀀贸易,total,all,900000000,USD
";
    let facts = facts_file(dir.path(), "names.csv", rows);
    for lang in ["en", "zh"] {
        let pdf = dir.path().join(format!("names-{lang}.pdf"));
        run_ok(&[
            "render",
            "--region",
            "Yunnan",
            "--period",
            "2021-Q3",
            "--lang",
            lang,
            "--facts",
            facts.to_str().unwrap(),
            "--out",
            pdf.to_str().unwrap(),
        ]);
        let text = pdf_text(&pdf);
        for name in ["香港", "堃𠀀贸易"] {
            assert!(text.contains(name), "{lang}: missing `{name}` in:\n{text}");
        }
        // The fallback faces were on typst's path and used: no tofu. (An English bulletin
        // names no CJK family: typst's fallback may take the complete face for all of them.)
        let fonts = pdf_fonts(&pdf);
        let faces: &[&str] = match lang {
            "zh" => &["+NotoSansCJKscCore-Regular", "+NotoSansCJKsc-Regular", "+HanaMinA"],
            _ => &["+NotoSansCJKsc-Regular", "+HanaMinA"],
        };
        for face in faces {
            assert!(fonts.contains(face), "{lang}: no {face} in:\n{fonts}");
        }
    }
}
