//! PostgreSQL as the facts store: the same summaries as from CSV, an import that fails leaves
//! nothing, a re-import changes nothing, and the worker served from the database. Each test
//! works in a schema of its own.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Bus, PgSchema, next, run, run_ok};

fn with_source(args: &[&str], source: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tradebulletin"))
        .args(args)
        .env("TRADEBULLETIN__DATA__SOURCE", source)
        .env_remove("TRADEBULLETIN_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn summaries_from_postgres_equal_those_from_csv() {
    let db = PgSchema::new().await;
    let report = run_ok(&["import", "data/facts.csv", "--into", &db.url]);
    assert!(
        report.contains("imported 381 facts from 1 file(s): 381 inserted or changed"),
        "{report}"
    );
    assert_eq!(db.count().await, 381);
    for (region, period) in [
        ("Heilongjiang", "2019-H1"),
        ("230000", "2019"),
        ("Guangdong", "2023"),
        ("China", "2019-H1"),
        ("Tibet", "2016"),
    ] {
        let args = ["summary", "--region", region, "--period", period, "--format", "json"];
        let from_csv = run_ok(&args);
        let output = with_source(&args, &db.url);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8(output.stdout).unwrap(), from_csv, "{region} {period}");
    }
    let missing = with_source(&["summary", "--region", "Jilin", "--period", "2030"], &db.url);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no_data"));
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn months_summed_in_the_database_give_the_summary_of_the_csv() {
    let db = PgSchema::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("months.csv");
    let mut csv = String::from("region,period,partner,flow,product,value,currency,source\n");
    for year in [2020, 2021] {
        for month in 1..=12 {
            for (partner, base) in [("World", 9000), ("Russia", 4000), ("Japan", 700)] {
                let e = base + month * 10 + (year - 2020) * 300;
                let i = base / 2 + month * 7;
                csv.push_str(&format!(
                    "Jilin,{year}-{month:02},{partner},exports,all,{e},CNY,customs\n"
                ));
                csv.push_str(&format!(
                    "Jilin,{year}-{month:02},{partner},imports,all,{i},CNY,customs\n"
                ));
                csv.push_str(&format!(
                    "Jilin,{year}-{month:02},{partner},total,all,{},CNY,customs\n",
                    e + i
                ));
            }
            csv.push_str(&format!(
                "China,{year}-{month:02},World,total,all,{},CNY,national\n",
                900000 + month * 1000 + (year - 2020) * 9000
            ));
        }
        // A quarter of its own for one series, 5 above the sum of its months: whichever path
        // took the months instead would show it.
        csv.push_str(&format!(
            "Jilin,{year}-Q2,Japan,total,all,{},CNY,customs\n",
            3405 + 900 * (year - 2020) + 5
        ));
    }
    std::fs::write(&path, csv).unwrap();
    run_ok(&["import", path.to_str().unwrap(), "--into", &db.url]);
    for period in ["2021-H1", "2021", "2021-Q2", "2021-03", "2021-02..05"] {
        let args = ["summary", "--region", "Jilin", "--period", period, "--format", "json"];
        let mut with_file = args.to_vec();
        with_file.extend(["--facts", path.to_str().unwrap()]);
        let from_csv = run_ok(&with_file);
        let output = with_source(&args, &db.url);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8(output.stdout).unwrap(), from_csv, "{period}");
    }
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_import_leaves_nothing_and_a_reimport_changes_nothing() {
    let db = PgSchema::new().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "region,period,partner,flow,product,value,currency\nJilin,2020,World,total,all,100,USD\nJilin,2019,World,total,all,80,USD\n").unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "region,period,partner,flow,product,value,currency\nJilin,2021,World,total,all,120,USD\nJilin,2022,World,total,all,-1,USD\n").unwrap();

    let failed = run(&[
        "import",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--into",
        &db.url,
    ]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("bad.csv line 3, field `value`"), "{stderr}");
    assert_eq!(db.count().await, 0, "nothing of either file is loaded");

    let first = run_ok(&["import", good.to_str().unwrap(), "--into", &db.url]);
    assert!(first.contains("2 inserted or changed"), "{first}");
    let again = run_ok(&["import", good.to_str().unwrap(), "--into", &db.url]);
    assert!(
        again.contains("imported 2 facts from 1 file(s): 0 inserted or changed"),
        "{again}"
    );
    assert_eq!(db.count().await, 2);

    // A conflict across files names both places.
    let other = dir.path().join("other.csv");
    std::fs::write(
        &other,
        "region,period,partner,flow,product,value,currency\nJilin,2020,World,total,all,101,USD\n",
    )
    .unwrap();
    let conflict = run(&[
        "import",
        good.to_str().unwrap(),
        other.to_str().unwrap(),
        "--into",
        &db.url,
    ]);
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        stderr.contains("other.csv line 2") && stderr.contains("good.csv line 2"),
        "{stderr}"
    );

    // A changed figure is updated in place.
    std::fs::write(
        &good,
        "region,period,partner,flow,product,value,currency\nJilin,2020,World,total,all,110,USD\n",
    )
    .unwrap();
    let updated = run_ok(&["import", good.to_str().unwrap(), "--into", &db.url]);
    assert!(updated.contains("1 inserted or changed"), "{updated}");
    let output = with_source(
        &["summary", "--region", "Jilin", "--period", "2020", "--format", "json"],
        &db.url,
    );
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["total"]["value"], 110.0);
    assert_eq!(s["total"]["growth_pct"], 37.5);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_serves_requests_from_postgres() {
    let db = PgSchema::new().await;
    run_ok(&["import", "data/facts.csv", "--into", &db.url]);
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.#").await;
    let _worker = bus.spawn_worker(&[("TRADEBULLETIN__DATA__SOURCE", &db.url)]);
    bus.request(
        json!({"job_id": "from-pg", "region": "Heilongjiang", "period": "2019-H1"}),
        "m",
    )
    .await;
    let result = next(&mut results, Duration::from_secs(60)).await.expect("a result");
    assert_eq!(result.status(), "succeeded", "{}", result.body);
    assert_eq!(result.body["summary"]["total"]["gap_pp"], 17.6);
    assert_eq!(result.body["summary"]["partners"][0]["share_pct"], 68.9);
    bus.cleanup().await;
    db.drop_schema().await;
}
