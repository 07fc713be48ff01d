//! Criterion micro-benchmarks (issue 8): decoding one JSON Lines record, a sliding-window
//! update at 10⁴, 10⁶ and 10⁷ keys, `near_limit` evaluation, and the content fingerprint.
//!
//! `cargo bench -p anning-benches --bench micro` (release profile: thin LTO, one codegen
//! unit). Figures and the machine are in `benches/README.md`.

use std::hint::black_box;
use std::sync::Arc;

use anning_detector::near_limit::NearLimit;
use anning_detector::{Engine, Enricher, Record, RecordBuilder, Registry, Slot};
use anning_pipelines::decode::{assemble, jsonl::JsonFields};
use anning_rules::{RecordKind, compile, default_pack, text};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const LINE: &str = r#"{"ts":1794297600123,"type":"sms","id":"m1234567","src":"10690001234","dst":"13800138000","text":"【京东】双11爆款直降，领券满299减50，戳 t.cn/AbC123 抢购，回T退订"}"#;

fn decode(c: &mut Criterion) {
    let pack = default_pack();
    let registry = Registry::default();
    let en = Enricher::new(&pack, &registry);
    let mut b = RecordBuilder::default();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("jsonl_record_default_pack", |bench| {
        bench.iter(|| {
            let mut f = JsonFields::parse(black_box(LINE)).unwrap();
            black_box(assemble(&mut f, &mut b, en).unwrap())
        })
    });
    g.finish();
}

/// One subscriber message from sender `i`.
fn sms(en: Enricher<'_>, b: &mut RecordBuilder, i: u64, ts: i64) -> Record {
    b.clear();
    b.set(Slot::Src, &format!("13{:09}", i % 1_000_000_000));
    b.set(Slot::Dst, "13900000000");
    b.finish(en, ts, RecordKind::Sms, None, None, None)
}

fn window_update(c: &mut Criterion) {
    let pack = Arc::new(
        compile(
            "[[rule]]\nid = \"v\"\nkind = \"rate\"\ndim = \"src\"\nwindow = \"1h\"\nslide = \"1m\"\nthreshold = 1000000\nladder = [{ action = \"alert\", for = \"1h\" }]\n",
        )
        .unwrap(),
    );
    let registry = Registry::default();
    let en = Enricher::new(&pack, &registry);
    let mut b = RecordBuilder::default();
    let mut g = c.benchmark_group("window_update");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    for keys in [10_000u64, 1_000_000, 10_000_000] {
        // Every key already holds state; each iteration updates one key, spread over all.
        // Keys warm from their first record, so each update goes through the window (a
        // key seen a few times would otherwise only log the record: see `engine::cold`).
        let mut engine = Engine::new(Arc::clone(&pack), 0, 1).without_cold_keys();
        let mut out = Vec::new();
        let t0 = 1_794_297_600_000i64;
        for k in 0..keys {
            engine.process(&sms(en, &mut b, k, t0), t0 - 60_000, &mut out);
        }
        let recs: Vec<Record> = (0..4096u64)
            .map(|i| sms(en, &mut b, (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % keys, t0 + 1000))
            .collect();
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |bench, _| {
            bench.iter(|| {
                let r = &recs[i % recs.len()];
                i += 1;
                engine.process(black_box(r), t0 - 60_000, &mut out);
            })
        });
    }
    g.finish();
}

fn near_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("near_limit");
    g.throughput(Throughput::Elements(1));
    // A 1 h window by 5 min slides, 6 windows back: one record per call, a new slide every
    // 200 records (about a dodger's rate).
    g.bench_function("observe_1h_by_5m_k2_n6", |bench| {
        bench.iter_batched_ref(
            || (NearLimit::new(12, 6, 2), 0u64),
            |(w, n)| {
                *n += 1;
                let bin = (*n / 200) as i64;
                black_box(w.observe(bin, bin - 1, 180, 200, 2, 6))
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn fingerprint(c: &mut Criterion) {
    let text = "您的快递因地址不详被退回，请点击 t.cn/AbC123 重新填写，单号1234";
    let mut g = c.benchmark_group("fingerprint");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("minhash_3gram_30_chars", |bench| {
        bench.iter(|| black_box(text::fingerprint(black_box(text))))
    });
    let pack = default_pack();
    g.bench_function("content_classes_default_pack", |bench| {
        bench.iter(|| black_box(pack.lexicon.classify_text(black_box(text))))
    });
    g.finish();
}

criterion_group!(benches, decode, window_update, near_limit, fingerprint);
criterion_main!(benches);
