//! PostgreSQL at scale: generates facts (31 provinces and the nation, 200 partners, products,
//! twelve months, as many years as the size needs), imports them with `import`'s code path
//! (COPY, upsert) and reports rows per second, then measures the latency of whole summaries
//! (query + summary) at 100 thousand, 1 million and 10 million facts.
//!
//! Run with `cargo bench --bench postgres` (PostgreSQL on 127.0.0.1:5432, database `test`);
//! `TRADEBULLETIN_BENCH_SIZES=100000,1000000` picks other sizes. It works in a schema of its
//! own and drops it afterwards.

use std::fmt::Write;
use std::time::{Duration, Instant};

use tradebulletin::facts::FactSet;
use tradebulletin::period::Period;
use tradebulletin::pgstore::PgStore;
use tradebulletin::region::Region;
use tradebulletin::summary::summarise;

const PARTNERS: usize = 200;
const PRODUCTS: [&str; 5] = ["high-tech", "agricultural", "steel", "textiles", "machinery"];
/// Facts per region, year and month: partners and World in three flows, and products.
const PER_MONTH: usize = (PARTNERS + 1) * 3 + PRODUCTS.len();

/// One region-year of monthly facts, as a validated set.
fn region_year(region: Region, year: i32, seed: &mut u64) -> FactSet {
    let mut csv = String::with_capacity(PER_MONTH * 12 * 60);
    csv.push_str("region,period,partner,flow,product,value,currency\n");
    for month in 1..=12 {
        let partners = std::iter::once("World".to_string()).chain((0..PARTNERS).map(|p| format!("Partner {p}")));
        for partner in partners {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let exports = 1_000_000 + (*seed >> 40);
            let imports = 1_000_000 + ((*seed >> 16) & 0xFFFFFF);
            for (flow, value) in [("exports", exports), ("imports", imports), ("total", exports + imports)] {
                writeln!(
                    csv,
                    "{},{year}-{month:02},{partner},{flow},all,{value},CNY",
                    region.code()
                )
                .unwrap();
            }
        }
        for product in PRODUCTS {
            writeln!(
                csv,
                "{},{year}-{month:02},World,exports,{product},{},CNY",
                region.code(),
                1000 + month
            )
            .unwrap();
        }
    }
    FactSet::from_csv_reader("generated", csv.as_bytes()).expect("generated facts are valid")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(size: usize) -> (Duration, Duration, f64) {
    let schema = format!("bench_{size}");
    let admin_url = "postgres://postgres@127.0.0.1:5432/test";
    let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL runs");
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let url = format!("{admin_url}?options=-c%20search_path%3D{schema}");
    let db = PgStore::connect(&url, None).await.unwrap();
    db.migrate().await.unwrap();

    // The queried region and the nation always have 2018-2019 in full; the rest of the table
    // is other provinces and earlier years, so the summary's work is the same at every size.
    let hlj = Region::parse("Heilongjiang").unwrap();
    let mut plan: Vec<(Region, i32)> = vec![
        (hlj, 2019),
        (hlj, 2018),
        (Region::china(), 2019),
        (Region::china(), 2018),
    ];
    let others: Vec<Region> = Region::all().filter(|r| *r != hlj && !r.is_national()).collect();
    let per_region_year = PER_MONTH * 12;
    let mut year = 2019;
    'fill: loop {
        for region in &others {
            if plan.len() * per_region_year >= size {
                break 'fill;
            }
            plan.push((*region, year));
        }
        year -= 1;
    }
    let mut seed = 42u64;
    let (mut rows, mut import_time) = (0u64, Duration::ZERO);
    for (region, year) in plan {
        let facts = region_year(region, year, &mut seed);
        let report = db.import(&facts).await.unwrap();
        rows += report.rows;
        import_time += report.elapsed;
    }
    admin.batch_execute(&format!("ANALYZE {schema}.facts")).await.unwrap();
    let rate = rows as f64 / import_time.as_secs_f64();

    let periods = ["2019-H1", "2019-Q3", "2019", "2019-06"].map(|p| Period::parse(p).unwrap());
    for period in &periods {
        summarise(&db.facts_for(hlj, *period).await.unwrap(), hlj, *period).unwrap();
    }
    let mut times = Vec::new();
    for i in 0..200 {
        let period = periods[i % periods.len()];
        let started = Instant::now();
        let facts = db.facts_for(hlj, period).await.unwrap();
        let summary = summarise(&facts, hlj, period).unwrap();
        times.push(started.elapsed());
        assert_eq!(summary.partners.len(), PARTNERS);
    }
    times.sort();
    let (median, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
    println!(
        "{rows:>10} facts: imported at {rate:>9.0} rows/s ({:.1} s); summary median {:.2} ms, p90 {:.2} ms",
        import_time.as_secs_f64(),
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    (median, p90, rate)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("TRADEBULLETIN_BENCH_SIZES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("sizes are numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![100_000, 1_000_000, 10_000_000]);
    println!("summary of Heilongjiang (200 partners, months) for 2019-H1, 2019-Q3, 2019, 2019-06 from PostgreSQL");
    let mut medians = Vec::new();
    for size in sizes {
        let (median, _, _) = run(size).await;
        medians.push((size, median));
    }
    if let (Some((_, first)), Some((size, last))) = (medians.first(), medians.last()) {
        println!(
            "median at {size} facts is {:.2} times the median at the smallest size",
            last.as_secs_f64() / first.as_secs_f64()
        );
    }
}
