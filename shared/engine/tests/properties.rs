//! Malformed requests always come back as a typed error, never a panic.

use proptest::prelude::*;
use serde_json::{json, Value};
use vacal_core::request::parse_request;
use vacal_core::request::KNOWN_FIELDS;
use vacal_engine::{calibrate, EngineError, NoProgress};

/// Any JSON value, a few levels deep, with the strings and numbers requests are made of.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0.0),
            Just(1.0),
            Just(-1.0),
            Just(0.5),
            Just(1e308),
            Just(-0.0),
            -1e6f64..1e6
        ]
        .prop_map(|x| json!(x)),
        (0u64..20).prop_map(|x| json!(x)),
        prop_oneof![
            Just("use_example"),
            Just("neonate"),
            Just("child"),
            Just("eava"),
            Just("other"),
            Just("pneumonia"),
            Just("Unspecified"),
            Just("prior"),
            Just("fixed"),
            Just("samples"),
            Just(""),
            Just("Birth asphyxia"),
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("va_data".to_string()),
                        Just("eava".to_string()),
                        Just("insilicova".to_string()),
                        Just("causes".to_string()),
                        Just("rows".to_string()),
                        Just("matrix".to_string()),
                        Just("samples".to_string()),
                        Just("ID".to_string()),
                        Just("cause".to_string()),
                        Just("pneumonia".to_string()),
                        Just("other".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn valid_request() -> Value {
    json!({
        "va_data": {"eava": [44, 168, 267, 268, 29, 164], "interva": "use_example"},
        "age_group": "neonate",
        "country": "Mozambique",
        "mcmc": {"n_mcmc": 100, "n_burn": 100, "n_chain": 2},
    })
}

/// Parses and, when parsing succeeds, calibrates with a tiny MCMC budget.
fn run(body: &Value) -> Result<(), EngineError> {
    let mut request = parse_request(body)?;
    request.mcmc.n_mcmc = 100;
    request.mcmc.n_burn = 100;
    request.mcmc.n_thin = 1;
    request.mcmc.n_chain = 2;
    calibrate(&request, &NoProgress).map(|_| ())
}

fn assert_typed(body: &Value) {
    let outcome = std::panic::catch_unwind(|| run(body));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(EngineError::Invalid { field, message })) => {
            assert!(
                !field.is_empty() && !message.is_empty(),
                "empty error for {body}"
            );
        }
        Ok(Err(other)) => panic!("non-input error {other:?} for {body}"),
        Err(_) => panic!("panic for {body}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_panic(body in arbitrary_json()) {
        assert_typed(&body);
    }

    #[test]
    fn a_valid_request_with_one_field_replaced_never_panics(
        field in prop::sample::select(KNOWN_FIELDS.to_vec()),
        value in arbitrary_json(),
    ) {
        let mut body = valid_request();
        body[field] = value;
        assert_typed(&body);
    }

    #[test]
    fn a_valid_request_with_damaged_data_never_panics(
        algorithm in prop::sample::select(vec!["eava", "interva", "insilicova"]),
        value in arbitrary_json(),
    ) {
        let mut body = valid_request();
        body["va_data"][algorithm] = value;
        assert_typed(&body);
    }
}

#[test]
fn each_documented_bad_input_is_refused_with_a_message_naming_it() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"va_data": {"eava": [{"ID": 1, "cause": "Broken leg"}]}, "age_group": "neonate", "country": "Kenya"}),
            "va_data.eava",
            "Broken leg",
        ),
        (
            json!({"va_data": {"eava": [0, 0, 0, 0, 0, 0]}, "age_group": "neonate", "country": "Kenya"}),
            "va_data.eava",
            "no deaths",
        ),
        (
            json!({"va_data": {"eava": {"a": 1, "b": 2}, "interva": {"a": 1, "c": 2}}, "mmat_type": "fixed",
                "missmat": {"eava": {"causes": ["a", "b"], "matrix": [[1, 0], [0, 1]]},
                            "interva": {"causes": ["a", "c"], "matrix": [[1, 0], [0, 1]]}}}),
            "va_data.interva",
            "differ",
        ),
        (
            json!({"va_data": {"x": {"a": 1, "b": 2}}, "mmat_type": "fixed",
                "missmat": {"x": {"causes": ["a", "b"], "matrix": [[0.5, 0.6], [0, 1]]}}}),
            "missmat.x.matrix[0]",
            "sum to 1",
        ),
        (
            json!({"va_data": {"x": {"a": 1, "b": 2}},
                "missmat": {"x": {"causes": ["a", "b"], "matrix": [[1, 0], [1, 1]]}}}),
            "missmat.x.matrix[0][1]",
            "positive",
        ),
        (
            json!({"va_data": {"eava": [44, 168, 267, 268, 29, 164]}, "country": "Kenya"}),
            "age_group",
            "required",
        ),
        (
            json!({"va_data": {"eava": [44, 168, 267, 268, 29, 164]}, "age_group": "neonate"}),
            "country",
            "required",
        ),
        (
            json!({"va_data": {"myalgo": [44, 168, 267, 268, 29, 164]}, "age_group": "neonate", "country": "Kenya"}),
            "va_data.myalgo",
            "supply missmat",
        ),
        (
            json!({"va_data": {"x": (0..41).map(|i| (format!("c{i}"), json!(1))).collect::<serde_json::Map<_, _>>()}}),
            "va_data.x",
            "too many causes",
        ),
        (
            json!({"va_data": {"eava": [1, 2, 3]}, "age_group": "neonate", "country": "Kenya"}),
            "va_data.eava",
            "expected 6",
        ),
        (
            json!({"va_data": {"eava": [[1, 1, 0, 0, 0, 0]]}, "age_group": "neonate", "country": "Kenya"}),
            "va_data.eava.rows[0]",
            "exactly one 1",
        ),
        (
            json!({"va_data": {"eava": "use_exmaple"}}),
            "va_data.eava",
            "use_example",
        ),
        (json!({"va_data": {}}), "va_data", "at least one"),
        (
            json!({"va_data": {"eava": "use_example"}, "age_group": "adult"}),
            "age_group",
            "neonate",
        ),
        (
            json!({"va_data": {"eava": "use_example"}, "mmat_type": "posterior"}),
            "mmat_type",
            "prior",
        ),
        (
            json!({"va_data": {"eava": "use_example"}, "mcmc": {"n_chain": 0}}),
            "mcmc.n_chain",
            "whole number",
        ),
        (
            json!({"va_data": {"eava": [1.5, 2, 3, 4, 5, 6]}, "age_group": "neonate", "country": "Kenya"}),
            "va_data.eava",
            "whole number",
        ),
        (
            json!({"va_data": {"eava": {"Intrapartum": 5, "Other": 3}}, "age_group": "neonate", "country": "Kenya"}),
            "studycause_map",
            "required",
        ),
        (
            json!({"va_data": {"eava": "use_example"}, "age_group": "neonate", "country": "Kenya", "mmat_type": "samples"}),
            "missmat",
            "samples",
        ),
        (
            json!({"va_data": {"x": {"a": 1, "b": 2}}, "mmat_type": "samples",
                "missmat": {"x": {"causes": ["a", "b"], "samples": [[[1, 0], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]}}}),
            "missmat.x.samples[0][0][1]",
            "zero",
        ),
    ];
    for (body, want_field, want_text) in cases {
        match run(&body) {
            Err(EngineError::Invalid { field, message }) => {
                assert_eq!(field, want_field, "field for {body}: {message}");
                assert!(message.contains(want_text), "message for {body}: {message}");
            }
            other => panic!("{body}: expected an input error, got {other:?}"),
        }
    }
}

#[test]
fn nan_and_out_of_range_numbers_are_refused() {
    assert!(serde_json::from_str::<Value>(r#"{"va_data": {"eava": [NaN]}}"#).is_err());
    assert!(serde_json::from_str::<Value>(r#"{"nocalib_threshold": 1e400}"#).is_err());
    let body = json!({"va_data": {"eava": "use_example"}, "age_group": "neonate",
                      "country": "Kenya", "nocalib_threshold": 2.5});
    assert!(matches!(run(&body), Err(EngineError::Invalid { .. })));
}
