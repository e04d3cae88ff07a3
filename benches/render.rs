//! Times a bulletin: template filling, the typst CLI alone on the same source and flags, and
//! render end to end (fill, job root, typst, read the PDF). Run with
//! `cargo bench --bench render` after `scripts/setup`.

use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};
use tradebulletin::narrative::Language;
use tradebulletin::period::Period;
use tradebulletin::region::Region;
use tradebulletin::render::Renderer;
use tradebulletin::settings::Settings;
use tradebulletin::summary::summarise;
use tradebulletin::typst::{Typst, TypstOptions, write_sources};

fn bench(c: &mut Criterion) {
    let settings = Settings::load(None).unwrap();
    let typst = Typst::new(TypstOptions {
        binary: settings.render.typst.clone().into(),
        latin_fonts: settings.render.latin_fonts.clone().into(),
        cjk_fonts: settings.render.cjk_fonts.clone().into(),
        cjk_fallback_fonts: settings.render.cjk_fallback_fonts.clone().into(),
        timeout: Duration::from_secs(60),
        max_concurrent: 1,
    })
    .expect("scripts/setup has installed the fonts");
    let options = typst.options().clone();
    let args_typst = typst.clone();
    let renderer = Renderer::new(typst, "bench".into());
    let store = tradebulletin::store::builtin();
    let summary = summarise(
        &store,
        Region::parse("Heilongjiang").unwrap(),
        Period::parse("2019-H1").unwrap(),
    )
    .unwrap();
    let issued = NaiveDate::from_ymd_opt(2019, 7, 19).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    for language in [Language::En, Language::Zh] {
        let meta = renderer.meta(language, issued);
        let name = language.code();
        c.bench_function(&format!("render/{name}/fill template"), |b| {
            b.iter(|| renderer.templates().bulletin(&summary, &meta).unwrap())
        });
        let source = renderer.templates().bulletin(&summary, &meta).unwrap();
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(write_sources(dir.path(), &source)).unwrap();
        let out = dir.path().join("out.pdf");
        c.bench_function(&format!("render/{name}/typst CLI alone"), |b| {
            b.iter(|| {
                let status = Command::new(&options.binary)
                    .args(args_typst.compile_args(dir.path(), &source, language, 0))
                    .arg(dir.path().join("bulletin.typ"))
                    .arg(&out)
                    .status()
                    .unwrap();
                assert!(status.success());
            })
        });
        c.bench_function(&format!("render/{name}/render end to end"), |b| {
            b.iter(|| runtime.block_on(renderer.render(&summary, language, issued)).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
