//! Times the summary: on the shipped sample dataset, and on about a million generated facts
//! (31 provinces, 200 partners, three flows, twelve months, five years). Run with
//! `cargo bench --bench summary`.

use std::fmt::Write;

use criterion::{Criterion, criterion_group, criterion_main};
use tradebulletin::facts::FactSet;
use tradebulletin::period::Period;
use tradebulletin::region::Region;
use tradebulletin::summary::summarise;

/// Monthly facts for every province and the nation: World and `partners` partners, three
/// flows, products, twelve months of `years`.
fn generated(partners: usize, years: std::ops::RangeInclusive<i32>) -> FactSet {
    let mut csv = String::from("region,period,partner,flow,product,value,currency\n");
    let mut n: u64 = 1;
    for region in Region::all() {
        for year in years.clone() {
            for month in 1..=12 {
                let names = std::iter::once("World".to_string()).chain((0..partners).map(|p| format!("Partner {p}")));
                for partner in names {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let exports = 1_000_000 + (n >> 40);
                    let imports = 1_000_000 + ((n >> 20) & 0xFFFFF);
                    for (flow, value) in [("exports", exports), ("imports", imports), ("total", exports + imports)] {
                        writeln!(
                            csv,
                            "{},{year}-{month:02},{partner},{flow},all,{value},CNY",
                            region.name_en()
                        )
                        .unwrap();
                    }
                }
                for product in ["high-tech", "agricultural", "steel"] {
                    writeln!(
                        csv,
                        "{},{year}-{month:02},World,exports,{product},{},CNY",
                        region.name_en(),
                        1000 + month
                    )
                    .unwrap();
                }
            }
        }
    }
    FactSet::from_csv_reader("generated", csv.as_bytes()).expect("generated facts are valid")
}

fn bench(c: &mut Criterion) {
    let store = tradebulletin::store::builtin();
    let hlj = Region::parse("Heilongjiang").unwrap();
    let h1 = Period::parse("2019-H1").unwrap();
    c.bench_function("summary/sample Heilongjiang 2019-H1", |b| {
        b.iter(|| summarise(&store, hlj, h1).unwrap())
    });
    let started = std::time::Instant::now();
    let big = generated(200, 2016..=2020);
    println!(
        "generated and validated {} facts in {:.1?}",
        big.len(),
        started.elapsed()
    );
    let h1 = Period::parse("2020-H1").unwrap();
    c.bench_function("summary/1M facts, 200 partners, 2020-H1 from months", |b| {
        b.iter(|| summarise(&big, hlj, h1).unwrap())
    });
    let june = Period::parse("2020-06").unwrap();
    c.bench_function("summary/1M facts, 200 partners, 2020-06", |b| {
        b.iter(|| summarise(&big, hlj, june).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
