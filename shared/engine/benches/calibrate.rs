//! Wall time of `calibrate` on the R reference cases at default settings (criterion).
//! `cargo bench -p vacal-engine --bench calibrate`

#[path = "../tests/common/reference.rs"]
mod reference;

use criterion::{criterion_group, criterion_main, Criterion};
use vacal_core::request::parse_request;
use vacal_engine::{calibrate, NoProgress};

const CASES: [&str; 5] = [
    "neonate_eava_mozambique__r1_s1",
    "neonate_insilicova_mozambique__r1_s1",
    "toy_custom_prior__r1_s1",
    "cacode_bangladesh_eava_counts__r1_s1",
    "neonate_ensemble_mozambique__r1_s1",
];

fn bench(c: &mut Criterion) {
    let runs = reference::reference_runs();
    let mut group = c.benchmark_group("calibrate");
    group.sample_size(10);
    for case in CASES {
        let run = &runs.iter().find(|(name, _)| name == case).expect("case").1;
        let request = parse_request(&reference::request_for(run)).unwrap();
        group.bench_function(case, |b| {
            b.iter(|| calibrate(&request, &NoProgress).expect("calibrates"))
        });
    }
    let child = parse_request(&serde_json::json!({
        "va_data": {"eava": "use_example", "insilicova": "use_example", "interva": "use_example"},
        "age_group": "child", "country": "Mozambique",
    }))
    .unwrap();
    group.bench_function("child_ensemble_mozambique", |b| {
        b.iter(|| calibrate(&child, &NoProgress).expect("calibrates"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
