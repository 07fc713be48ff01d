use anning_rules::*;

#[test]
fn default_pack_compiles_with_the_published_limit() {
    let pack = default_pack();
    assert_eq!(pack.name, "default");
    let limit = pack.rules.iter().find(|r| r.id == "subscriber-hourly-limit").unwrap();
    assert_eq!(
        limit.kind,
        RuleKind::Rate {
            threshold: 200,
            distinct: None,
            sequential: None,
        }
    );
    assert_eq!(limit.window_ms, 3_600_000);
    let near = pack.rules.iter().find(|r| r.id == "near-limit-hourly").unwrap();
    match near.kind {
        RuleKind::NearLimit { limit, lo, .. } => assert_eq!((limit, lo), (200, 180)),
        ref other => panic!("unexpected kind {other:?}"),
    }
    assert_eq!(pack.dims[near.dim].name(), "src");
    assert_eq!(pack.number_plan.classify("13800138000"), AddrClass::Subscriber);
    assert_eq!(pack.number_plan.classify("10690001234"), AddrClass::Port);
    assert_eq!(pack.number_plan.classify("9512345"), AddrClass::CallCentre);
    assert_eq!(pack.number_plan.classify("12345"), AddrClass::Other);
    assert_eq!(pack.number_plan.classify("12800138000"), AddrClass::Other);
}
