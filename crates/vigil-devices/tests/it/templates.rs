//! Declarative vendor-JSON templates in the IoMT FHIR Connector format: the connector's own
//! cases (shared/compat/iomt-fhir), code validation, hot reload, the `template:PATH` decoder,
//! the shipped example templates, and robustness.

use crate::ctx;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_devices::decoder_for;
use vigil_devices::templates::{
    ContentTemplate, Measurement, Reload, TemplateError, TemplateSet, TemplateStore, parse_json,
};
use vigil_model::{Metric, Source, Timestamp};

const EXPECTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/compat/iomt-fhir/expected.json"
);

fn compat_dir() -> PathBuf {
    Path::new(EXPECTED)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{} must be present: {e}", path.display()));
    parse_json(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn compat(name: &str) -> Value {
    read_json(&compat_dir().join(name))
}

fn content(name: &str) -> ContentTemplate {
    ContentTemplate::from_value(&compat(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates")
        .join(rel)
}

fn metric(code: &str) -> Metric {
    code.parse().expect("known code")
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("time")
}

/// The connector's expected times are UTC without a zone, to the second.
fn same_time(expected: &str, got: Timestamp) -> bool {
    let has_zone =
        expected.ends_with('Z') || expected.get(19..).is_some_and(|t| t.contains(['+', '-']));
    let e = if has_zone {
        ts(expected)
    } else {
        ts(&format!("{expected}Z"))
    };
    if expected.contains('.') {
        e == got
    } else {
        e.millis() == got.millis().div_euclid(1000) * 1000
    }
}

#[test]
fn every_case_of_the_connector_gives_its_expected_measurements() {
    let expected = read_json(Path::new(EXPECTED));
    let cases = expected["cases"].as_array().expect("cases array");
    assert!(
        cases.len() >= 6,
        "expected.json lists {} cases",
        cases.len()
    );
    for case in cases {
        let template = case["template"].as_str().expect("template");
        let payload = compat(case["payload"].as_str().expect("payload"));
        let got = content(template)
            .evaluate(&payload)
            .unwrap_or_else(|e| panic!("{template}: {e}"));
        assert!(got.dropped.is_empty(), "{template}: {:?}", got.dropped);
        let want = case["measurements"].as_array().expect("measurements");
        assert_eq!(got.measurements.len(), want.len(), "{template}: {got:?}");
        for (m, w) in got.measurements.iter().zip(want) {
            if let Some(t) = w.get("type").and_then(Value::as_str) {
                assert_eq!(m.type_name, t, "{template}");
            }
            assert_eq!(
                m.device_id,
                w["device"].as_str().expect("device"),
                "{template}"
            );
            let wt = w["time"].as_str().expect("time");
            assert!(same_time(wt, m.time), "{template}: time {} vs {wt}", m.time);
            let wv = w["values"].as_object().expect("values");
            assert_eq!(m.values.len(), wv.len(), "{template}: {:?}", m.values);
            for (name, value) in wv {
                let got = m
                    .values
                    .get(name)
                    .unwrap_or_else(|| panic!("{template}: no {name}"));
                match value {
                    Value::String(s) => assert_eq!(got, s, "{template}: {name}"),
                    Value::Number(n) => {
                        let (g, n) = (
                            got.parse::<f64>().expect("numeric"),
                            n.as_f64().expect("f64"),
                        );
                        assert!(
                            (g - n).abs() <= 1e-9 * n.abs().max(1.0),
                            "{template}: {name} {g} vs {n}"
                        );
                    }
                    other => panic!("{template}: unexpected expected value {other}"),
                }
            }
        }
    }
}

#[test]
fn calculated_values_are_rendered_like_the_connector() {
    let n = content("cases/data_Documentation_CalculatedFunction_TransformData_Template.json")
        .evaluate(&compat(
            "cases/data_Documentation_CalculatedFunction_TransformData_Payload.json",
        ))
        .expect("match");
    let heights: Vec<&str> = n
        .measurements
        .iter()
        .map(|m| m.values["height"].as_str())
        .collect();
    assert_eq!(heights, ["1.9812", "1.9304"]);
    assert_eq!(n.measurements[0].time, ts("2019-02-01T22:46:01.875Z"));
}

#[test]
fn every_template_file_of_the_connector_loads() {
    let mut n = 0;
    for dir in ["cases", "templates"] {
        let entries = std::fs::read_dir(compat_dir().join(dir)).expect("compat dir");
        for e in entries {
            let path = e.expect("entry").path();
            let v = read_json(&path);
            let ty = v
                .get("templateType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ty.ends_with("Content") {
                ContentTemplate::from_value(&v)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 10, "only {n} content templates");
}

#[test]
fn iot_hub_templates_take_device_and_time_from_system_properties() {
    for t in [
        "cases/data_IotJsonPathContentTemplateValid.json",
        "cases/data_IotJsonPathContentTemplateValidWithOptional.json",
    ] {
        for p in [
            "cases/data_IotHubPayloadExample.json",
            "cases/data_IotHubPayloadExampleMissingCreateTime.json",
        ] {
            let n = content(t).evaluate(&compat(p)).expect("match");
            assert_eq!(n.measurements.len(), 1, "{t} {p}");
            let m = &n.measurements[0];
            assert_eq!(m.type_name, "heartrate");
            assert_eq!(m.device_id, "ev-d795-1d04-55ae");
            assert_eq!(m.time, ts("2019-02-01T22:46:01.875Z"));
            assert_eq!(m.values["hr"], "203");
            assert_eq!(m.patient_id, None);
        }
    }
    let e = content("cases/data_IotJsonPathContentTemplateValid.json")
        .evaluate(&compat("cases/data_IotHubPayloadMultiValueExample.json"))
        .expect_err("no heartrate");
    assert!(
        matches!(&e, TemplateError::NoMatch { template_types } if template_types == &["heartrate"])
    );
    assert!(
        e.to_string()
            .contains("matches none of the 1 templates (typeName heartrate)"),
        "{e}"
    );
}

#[test]
fn iot_central_templates_take_device_and_time_from_their_fixed_paths() {
    let payload = json!({
        "applicationId": "app", "messageSource": "telemetry",
        "deviceId": "central-7", "enqueuedTime": "2021-03-04T05:06:07.123Z",
        "telemetry": { "Activity": "walking" },
        "template": { "Activity": "walking", "BloodPressure": { "Diastolic": 81 } },
        "messageProperties": { "patientId": "p-9" }
    });
    let plain = content("cases/data_IotCentralJsonPathContentTemplateValid.json")
        .evaluate(&payload)
        .expect("match");
    let opt = content("cases/data_IotCentralJsonPathContentTemplateValidWithOptional.json")
        .evaluate(&payload)
        .expect("match");
    for n in [&plain, &opt] {
        let m = &n.measurements[0];
        assert_eq!(
            (m.device_id.as_str(), m.time),
            ("central-7", ts("2021-03-04T05:06:07.123Z"))
        );
        assert_eq!(m.values["activity"], "walking");
        assert_eq!(m.values["bp_diastolic"], "81");
    }
    assert_eq!(plain.measurements[0].patient_id, None);
    assert_eq!(opt.measurements[0].patient_id.as_deref(), Some("p-9"));
}

#[test]
fn jsonpath_and_jmespath_collections_agree() {
    let payload =
        json!({ "heartrate": "78", "steps": "2", "device": "d1", "date": "2019-02-01T22:46:01Z" });
    let a = content("cases/data_CollectionContentTemplateHrAndSteps.json")
        .evaluate(&payload)
        .expect("jsonpath");
    let b = content("cases/data_CollectionContentTemplateHrAndStepsJmesPath.json")
        .evaluate(&payload)
        .expect("jmespath");
    assert_eq!(a, b);
    let names: Vec<&str> = a
        .measurements
        .iter()
        .map(|m| m.type_name.as_str())
        .collect();
    assert_eq!(names, ["heartrate", "steps"]);
    assert_eq!(a.measurements[0].values["hr"], "78");
}

#[test]
fn a_missing_required_value_drops_that_measurement_with_the_reason() {
    let t = content("cases/data_JsonPathContentTemplateValidWithOptional.json");
    // correlationIdExpression is given, so the correlation id is required.
    let p = json!([
        { "heartrate": 70, "device": "d1", "date": "2020-01-01T00:00:00Z", "sessionid": "s1", "patient": "p1" },
        { "heartrate": 71, "device": "d1", "date": "2020-01-01T00:01:00Z" },
        { "heartrate": 72, "date": "2020-01-01T00:02:00Z", "sessionid": "s3" }
    ]);
    let n = t.evaluate(&p).expect("matches");
    assert_eq!(n.measurements.len(), 1);
    let m = &n.measurements[0];
    assert_eq!(
        (m.correlation_id.as_deref(), m.patient_id.as_deref()),
        (Some("s1"), Some("p1"))
    );
    assert_eq!(m.values["hr"], "70", "numbers become their JSON text");
    let reasons: Vec<&str> = n.dropped.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("required correlation id missing"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("required device id missing: \"$.device\""),
        "{reasons:?}"
    );

    let set = TemplateSet::from_json(
        &compat("cases/data_JsonPathContentTemplateValid.json").to_string(),
        None,
    )
    .expect("set");
    let e = set
        .decode(br#"{"heartrate": 1, "device": "d"}"#, &ctx())
        .expect_err("all dropped");
    assert!(
        e.to_string()
            .contains("every match was dropped: heartrate: required timestamp missing"),
        "{e}"
    );
    let e = set.decode(b"{\"x\": 1}", &ctx()).expect_err("no match");
    assert!(matches!(e, TemplateError::NoMatch { .. }), "{e}");
    let e = set.decode(b"{not json", &ctx()).expect_err("not json");
    assert!(e.to_string().contains("payload is not JSON"), "{e}");
}

#[test]
fn broken_templates_are_rejected_with_the_place_and_reason() {
    let cases = [
        (
            r#"{"templateType":"Nope","template":{}}"#,
            "unsupported templateType \"Nope\"",
        ),
        (
            r#"{"templateType":"CollectionContent","template":{}}"#,
            "template must be an array",
        ),
        (
            r#"{"templateType":"JsonPathContent","template":{"typeName":"x","typeMatchExpression":"$..[?(@x","deviceIdExpression":"$.d","timestampExpression":"$.t","values":[]}}"#,
            "typeMatchExpression: invalid JSONPath",
        ),
        (
            r#"{"templateType":"JsonPathContent","template":{"typeName":"x","typeMatchExpression":"$..[?(@x)]","timestampExpression":"$.t"}}"#,
            "deviceIdExpression is required",
        ),
        (
            r#"{"templateType":"CalculatedContent","template":{"typeName":"x","defaultExpressionLanguage":"JmesPath","typeMatchExpression":"a[?","deviceIdExpression":"d","timestampExpression":"t"}}"#,
            "invalid JMESPath",
        ),
    ];
    for (text, want) in cases {
        let e = TemplateSet::from_json(text, None).expect_err(text);
        assert!(e.to_string().contains(want), "{e} lacks {want}");
    }
}

fn basic_set() -> TemplateSet {
    TemplateSet::load(&compat_dir().join("templates/basic-devicecontent.json"))
        .expect("basic loads")
}

#[test]
fn the_sample_mapping_loads_with_a_warning_about_diastolic_coded_as_heart_rate() {
    let set = basic_set();
    assert_eq!(
        set.sources.len(),
        2,
        "the sibling fhir mapping is loaded too"
    );
    let w = &set.warnings;
    let diastolic: Vec<&String> = w
        .iter()
        .filter(|w| w.contains("valueName diastolic coded 8867-4 (Heart rate)"))
        .collect();
    assert_eq!(diastolic.len(), 1, "{w:#?}");
    assert!(
        diastolic[0].contains("suggests 8462-4 (Diastolic blood pressure)"),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("component 8867-4 (Heart rate) is not part of panel 85354-9")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("valueName hrv: LOINC 80404-7 not in Vigil's registry")),
        "{w:#?}"
    );
    // Correct codes raise nothing.
    for v in ["hr", "steps", "systolic"] {
        let (a, b) = (format!("valueName {v} "), format!("valueName {v}:"));
        assert!(
            !w.iter().any(|x| x.contains(&a) || x.contains(&b)),
            "false alarm for {v}: {w:#?}"
        );
    }
    assert_eq!(w.len(), 5, "{w:#?}");
    // The HealthKit sample has the same mistake and no other name mismatch.
    let hk = TemplateSet::load(&compat_dir().join("templates/healthkitOnFhir-devicecontent.json"))
        .expect("hk loads");
    let suggests: Vec<&String> = hk
        .warnings
        .iter()
        .filter(|w| w.contains("suggests"))
        .collect();
    assert_eq!(suggests.len(), 1, "{suggests:#?}");
    assert!(suggests[0].contains("valueName diastolic coded 8867-4 (Heart rate)"));
}

#[test]
fn sample_measurements_become_readings_and_wrong_or_unknown_codes_are_reported() {
    let set = basic_set();
    let payload = br#"{"deviceid": "watch-1", "patientid": "p-001", "measurementdatetime": "2024-05-01T08:00:00Z",
        "heartrate": "72", "steps": "40", "systolic": "121", "diastolic": "79", "hrv": "45", "deviceWorn": "yes"}"#;
    let out = set.decode(payload, &ctx()).expect("decodes");
    assert_eq!(out.measurements.len(), 5);
    let codes: Vec<&str> = out.readings.iter().map(|r| r.metric.loinc()).collect();
    assert_eq!(codes, ["8867-4", "55423-8", "85354-9"]);
    let r = &out.readings[0];
    assert_eq!(
        (r.value, r.time, r.source),
        (Some(72.0), ts("2024-05-01T08:00:00Z"), Source::Template)
    );
    assert_eq!(r.device.as_str(), "watch-1");
    assert_eq!(r.patient.as_ref().map(|p| p.as_str()), Some("p-001"));
    assert_eq!(r.received, Some(crate::RECEIVED));
    let bp = &out.readings[2];
    assert_eq!(bp.value_of(metric("8480-6")), Some(121.0));
    assert_eq!(
        bp.value_of(metric("8462-4")),
        None,
        "a heart-rate-coded diastolic is not put in the panel"
    );
    let reasons: Vec<String> = out
        .unmapped
        .iter()
        .map(|u| format!("{} {:?}: {}", u.type_name, u.value_name, u.reason))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(reasons[0].contains("bloodpressure Some(\"diastolic\"): component 8867-4 (Heart rate) does not belong to panel 85354-9"), "{reasons:#?}");
    assert!(
        reasons[1].contains("hrv Some(\"hrv\"): LOINC 80404-7 not in Vigil's registry"),
        "{reasons:#?}"
    );
    assert!(
        reasons[2].contains(
            "deviceWorn Some(\"deviceWorn\"): valueType CodeableConcept is not a numeric reading"
        ),
        "{reasons:#?}"
    );
    for r in &out.readings {
        let rec = vigil_model::Record::Reading(r.clone());
        assert_eq!(
            vigil_model::validate_record(&rec, ts("2024-05-02T00:00:00Z"), 0),
            Ok(())
        );
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn hr_mapping(code: &str) -> String {
    json!({"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {
        "typeName": "pulse", "codes": [{"code": code, "system": "http://loinc.org"}],
        "value": {"valueName": "v", "valueType": "Quantity", "unit": "/min"}}}]})
    .to_string()
}

fn content_for(field: &str) -> String {
    json!({"templateType": "CollectionContent", "template": [{"templateType": "JsonPathContent", "template": {
        "typeName": "pulse", "typeMatchExpression": format!("$..[?(@{field})]"),
        "deviceIdExpression": "$.dev", "timestampExpression": "$.t",
        "values": [{"valueName": "v", "valueExpression": format!("$.{field}"), "required": true}]}}]})
    .to_string()
}

#[test]
fn the_store_reloads_changed_templates_and_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = dir.path().join("a-devicecontent.json");
    let f = dir.path().join("b-fhirmapping.json");
    write(&c, &content_for("pulse"));
    write(&f, &hr_mapping("8867-4"));
    let store = TemplateStore::open(dir.path(), Duration::ZERO).expect("opens");
    let payload = br#"{"pulse": 61, "bpm": 99, "dev": "d-1", "t": "2024-01-01T00:00:00Z"}"#;
    let v = |store: &TemplateStore| {
        let out = store.current().decode(payload, &ctx()).expect("decodes");
        (
            out.readings.first().map(|r| r.metric.loinc()),
            out.measurements[0].values["v"].clone(),
        )
    };
    assert_eq!(v(&store), (Some("8867-4"), "61".to_owned()));
    assert_eq!(
        store.reload_if_changed().expect("no change"),
        Reload::Unchanged
    );

    // A changed template takes effect without a restart.
    write(&c, &content_for("bpm"));
    assert_eq!(v(&store), (Some("8867-4"), "99".to_owned()));
    assert_eq!(store.reloads(), 1);

    // A broken change keeps the previous version and reports why.
    write(
        &c,
        "{ \"templateType\": \"CollectionContent\", \"template\": [ oops",
    );
    let e = store.reload_if_changed().expect_err("broken");
    assert!(
        e.to_string().contains("a-devicecontent.json: not JSON"),
        "{e}"
    );
    assert_eq!(v(&store), (Some("8867-4"), "99".to_owned()));
    let last = store.last_error().expect("error kept");
    assert!(last.contains("not JSON"), "{last}");

    // A mapping change (to a code the registry knows as something else) applies with a warning.
    write(&c, &content_for("pulse"));
    write(&f, &hr_mapping("9279-1"));
    assert_eq!(store.reload_if_changed().expect("fixed"), Reload::Reloaded);
    assert_eq!(store.last_error(), None);
    assert_eq!(v(&store), (Some("9279-1"), "61".to_owned()));
    // "v" suggests nothing; an unknown code warns.
    write(&f, &hr_mapping("0000-0"));
    assert_eq!(store.reload_if_changed().expect("loads"), Reload::Reloaded);
    assert!(
        store
            .warnings()
            .iter()
            .any(|w| w.contains("LOINC 0000-0 not in Vigil's registry")),
        "{:?}",
        store.warnings()
    );
    assert_eq!(v(&store).0, None);

    // A poll interval defers the check.
    let slow = TemplateStore::open(dir.path(), Duration::from_secs(3600)).expect("opens");
    write(&c, &content_for("bpm"));
    assert_eq!(v(&slow).1, "61");
    assert_eq!(
        slow.reload_if_changed().expect("explicit"),
        Reload::Reloaded
    );
    assert_eq!(v(&slow).1, "99");
}

#[test]
fn template_format_decodes_through_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("Vendor");
    std::fs::create_dir(&sub).expect("mkdir");
    write(&sub.join("X-devicecontent.json"), &content_for("pulse"));
    write(&sub.join("X-fhirmapping.json"), &hr_mapping("8867-4"));
    // decoder_for lower-cases names; the path is found again regardless of case.
    for p in [sub.clone(), sub.join("X-devicecontent.json")] {
        let name = format!("template:{}", p.display());
        let d = decoder_for(&name).unwrap_or_else(|| panic!("{name}"));
        assert!(d.format().starts_with("template:"));
        let out = d
            .decode(
                br#"{"pulse": 61, "dev": "d-1", "t": "2024-01-01T00:00:00Z"}"#,
                &ctx(),
            )
            .expect("decodes");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].fields["measurements"][0]["values"]["v"], "61");
        assert_eq!(
            out[0].fields["measurements"][0]["time"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(out[0].readings[0].value, Some(61.0));
        let e = d.decode(br#"{"other": 1}"#, &ctx()).expect_err("no match");
        assert!(
            e.to_string()
                .contains("matches none of the 1 templates (typeName pulse)"),
            "{e}"
        );
    }
    assert!(decoder_for("template:/nonexistent/dir").is_none());
    assert!(decoder_for("template:").is_none());
}

fn decode_example(vendor: &str, payload: &str) -> vigil_devices::templates::TemplateOutput {
    let set = TemplateSet::load(&shipped(vendor)).unwrap_or_else(|e| panic!("{vendor}: {e}"));
    assert_eq!(set.warnings, Vec::<String>::new(), "{vendor}");
    let bytes = std::fs::read(shipped(&format!("examples/{payload}"))).expect("example payload");
    set.decode(&bytes, &ctx())
        .unwrap_or_else(|e| panic!("{vendor}: {e}"))
}

fn summary(out: &vigil_devices::templates::TemplateOutput) -> Vec<(String, String, i64, Vec<f64>)> {
    out.readings
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = r.value.into_iter().collect();
            v.extend(r.components.iter().map(|c| c.value));
            (
                r.metric.key().to_owned(),
                r.device.to_string(),
                r.time.millis() / 1000,
                v,
            )
        })
        .collect()
}

#[test]
fn fitbit_intraday_example() {
    let out = decode_example("fitbit", "fitbit-intraday.json");
    let t0 = ts("2024-05-01T08:00:00Z").millis() / 1000;
    let dev = "fitbit-charge6-0042".to_owned();
    assert_eq!(
        summary(&out),
        [
            ("heart-rate".to_owned(), dev.clone(), t0, vec![64.0]),
            ("heart-rate".to_owned(), dev.clone(), t0 + 60, vec![66.0]),
            ("heart-rate".to_owned(), dev.clone(), t0 + 120, vec![71.0]),
            ("steps".to_owned(), dev.clone(), t0, vec![0.0]),
            ("steps".to_owned(), dev, t0 + 60, vec![48.0]),
        ]
    );
    assert!(
        out.readings
            .iter()
            .all(|r| r.patient.as_ref().map(|p| p.as_str()) == Some("p-001"))
    );
    assert!(out.unmapped.is_empty() && out.dropped.is_empty());
}

#[test]
fn withings_measure_groups_example() {
    let out = decode_example("withings", "withings-getmeas.json");
    let s = summary(&out);
    assert_eq!(s.len(), 4, "{s:?}");
    assert_eq!(
        s[0],
        (
            "bp".to_owned(),
            "withings-bpm-7".to_owned(),
            1_714_550_400,
            vec![128.0, 84.0]
        )
    );
    assert_eq!(
        s[1],
        (
            "heart-rate".to_owned(),
            "withings-bpm-7".to_owned(),
            1_714_550_400,
            vec![71.0]
        )
    );
    assert_eq!(s[2].0, "body-weight");
    assert!((s[2].3[0] - 72.35).abs() < 1e-9, "{s:?}");
    assert_eq!(
        s[3],
        (
            "spo2".to_owned(),
            "withings-scan-1".to_owned(),
            1_714_557_600,
            vec![97.0]
        )
    );
    let weight: Vec<&Measurement> = out
        .measurements
        .iter()
        .filter(|m| m.type_name == "weight")
        .collect();
    assert_eq!(weight[0].values["weight"], "72.35");
}

#[test]
fn healthkit_export_example() {
    let out = decode_example("healthkit", "healthkit-export.json");
    let s = summary(&out);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(
        s[0],
        (
            "heart-rate".to_owned(),
            "watch-s9-11".to_owned(),
            1_714_550_400,
            vec![72.0]
        )
    );
    assert_eq!(s[1].0, "body-temp");
    assert!(
        (s[1].3[0] - 37.0).abs() < 1e-9,
        "98.6 degF is 37 Cel: {s:?}"
    );
    // 08:10 at +02:00 is 06:10 UTC.
    assert_eq!(
        s[2],
        (
            "bp".to_owned(),
            "omron-x7".to_owned(),
            ts("2024-05-01T06:10:00Z").millis() / 1000,
            vec![132.0, 86.0]
        )
    );
    assert!(out.unmapped.is_empty() && out.dropped.is_empty(), "{out:?}");
}

fn all_template_sets() -> Vec<TemplateSet> {
    let mut sets: Vec<TemplateSet> = ["fitbit", "withings", "healthkit"]
        .iter()
        .map(|v| TemplateSet::load(&shipped(v)).expect("loads"))
        .collect();
    sets.push(basic_set());
    for e in std::fs::read_dir(compat_dir().join("cases")).expect("cases") {
        let path = e.expect("entry").path();
        if let Ok(set) = TemplateSet::load(&path) {
            sets.push(set);
        }
    }
    sets
}

fn arb_json() -> impl Strategy<Value = Value> {
    const KEYS: [&str; 22] = [
        "heartrate",
        "heartRate",
        "systolic",
        "diastolic",
        "steps",
        "Body",
        "deviceId",
        "device",
        "date",
        "endDate",
        "unit",
        "matchedToken",
        "type",
        "value",
        "measures",
        "body",
        "measuregrps",
        "dataset",
        "time",
        "SystemProperties",
        "iothub-enqueuedtime",
        "telemetry",
    ];
    let key = prop_oneof![
        proptest::sample::select(&KEYS[..]).prop_map(String::from),
        "[a-z]{1,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!("2019-02-01T22:46:01.875Z")),
        Just(json!("inches")),
        Just(json!(10)),
        Just(json!(-3)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_json_never_panics_evaluation(v in arb_json()) {
        thread_local!(static SETS: Vec<TemplateSet> = all_template_sets());
        let bytes = serde_json::to_vec(&v).expect("serializes");
        SETS.with(|sets| {
            for set in sets {
                let _ = set.normalize(&v);
                let _ = set.decode(&bytes, &ctx());
            }
        });
    }

    #[test]
    fn random_expressions_never_panic_compilation_or_evaluation(
        expr in "[$@.\\[\\]?()*'\"=<>!&|,:` a-z0-9-]{0,24}",
        jmes in any::<bool>(),
        v in arb_json(),
    ) {
        let lang = if jmes { "JmesPath" } else { "JsonPath" };
        let t = json!({"templateType": "CalculatedContent", "template": {
            "typeName": "x", "defaultExpressionLanguage": lang,
            "typeMatchExpression": expr, "deviceIdExpression": expr, "timestampExpression": expr,
            "values": [{"valueName": "v", "valueExpression": expr, "required": true}]}});
        if let Ok(set) = TemplateSet::from_json(&t.to_string(), None) {
            let _ = set.normalize(&v);
        }
    }

    #[test]
    fn random_text_never_panics_template_loading(s in ".{0,200}") {
        let _ = TemplateSet::from_json(&s, Some(&s));
    }
}
