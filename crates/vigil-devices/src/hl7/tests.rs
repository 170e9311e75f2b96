use super::*;

const MSH: &str =
    "MSH|^~\\&|MON^0011223344556677^EUI-64||||20240501120000+0200||ORU^R01^ORU_R01|c-1|P|2.6";

fn ctx() -> DecodeContext {
    DecodeContext::new(
        DeviceId::new("mon-1").expect("id"),
        Timestamp::parse("2024-05-01T10:05:00Z").expect("time"),
    )
}

fn msg(rows: &[&str]) -> String {
    let mut s = String::from(MSH);
    for r in rows {
        s.push('\r');
        s.push_str(r);
    }
    s.push('\r');
    s
}

fn kinds(m: &Hl7Message) -> Vec<String> {
    m.skipped
        .iter()
        .map(|s| {
            serde_json::to_value(&s.reason).expect("json")["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn an_empty_value_is_no_reading_never_zero() {
    let m = parse_oru_with(
        &msg(&["OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.150456||262688^MDC_DIM_PERCENT^MDC|||||R"]),
        &ctx(),
    )
    .expect("parse");
    assert!(m.readings.is_empty());
    assert!(m.observations.is_empty());
    assert_eq!(kinds(&m), ["empty_value"]);
}

#[test]
fn hierarchy_rows_and_unknown_codes_are_skipped_with_a_reason() {
    let m = parse_oru_with(
        &msg(&[
            "OBX|1|CWE|69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1|||||||X",
            "OBX|2||70675^MDC_DEV_METER_PULS_OXIM_CHAN^MDC|1.1.1",
            "OBX|3|NM|150324^MDC_SAT_O2_ART^MDC|1.1.1.150324|97|262688^MDC_DIM_PERCENT^MDC",
            "OBX|4|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.150456|97|262688^MDC_DIM_PERCENT^MDC",
        ]),
        &ctx(),
    )
    .expect("parse");
    assert_eq!(kinds(&m), ["not_numeric", "not_numeric", "unknown_code"]);
    assert_eq!(m.skipped[2].code, "150324");
    assert_eq!(m.observations.len(), 1);
    assert_eq!(m.readings.len(), 1);
    assert_eq!(m.readings[0].metric.loinc(), "59408-5");
}

#[test]
fn lf_crlf_stray_spaces_empty_set_ids_and_framing_bytes_are_tolerated() {
    let body = [
        "MSH|^~\\&|MON^0011223344556677^EUI-64||||20240501120000||ORU^R01|c-2|P|2.6",
        "PID|||  p-42^^^Hosp^PI ||Doe^Jane",
        "OBR|1|||x|||20240501115900",
        "OBX| | NM | 149530^MDC_PULS_OXIM_PULS_RATE^MDC | 1.1.1.149530 | 72 | 264864^MDC_DIM_BEAT_PER_MIN^MDC ",
    ];
    for sep in ["\n", "\r\n", "\r"] {
        let text = format!("\u{0B}{}{sep}\u{1C}\r", body.join(sep));
        let m = parse_oru_with(&text, &ctx()).expect("parse");
        assert_eq!(m.control_id, "c-2");
        assert_eq!(m.sending_app, "MON");
        assert_eq!(m.patient.as_ref().map(PatientId::as_str), Some("p-42"));
        assert_eq!(m.observations.len(), 1, "{sep:?}");
        let o = &m.observations[0];
        assert_eq!(o.set_id, None);
        assert_eq!(o.value, 72.0);
        assert_eq!(
            o.time.to_rfc3339(),
            "2024-05-01T11:59:00Z",
            "OBR-7 fallback"
        );
        let r = &m.readings[0];
        assert_eq!(r.source, Source::Hl7);
        assert_eq!(r.patient.as_ref().map(PatientId::as_str), Some("p-42"));
        assert_eq!(r.received, Some(ctx().received));
    }
}

#[test]
fn a_second_probe_reporting_the_same_metric_keeps_both_readings() {
    let m = parse_oru_with(
        &msg(&[
            "OBX|1|NM|188496^MDC_TEMP_AXIL^MDC|1.2.5.188496|36.9|268192^MDC_DIM_DEGC^MDC|||||R|||20240501115800",
            "OBX|2|NM|188496^MDC_TEMP_AXIL^MDC|1.2.6.188496|98.6|266560^MDC_DIM_FAHR^MDC|||||R|||20240501115800",
        ]),
        &ctx(),
    )
    .expect("parse");
    assert_eq!(m.readings.len(), 2);
    assert_eq!(m.observations[0].sub_id.as_deref(), Some("1.2.5.188496"));
    assert_eq!(m.observations[1].sub_id.as_deref(), Some("1.2.6.188496"));
    assert_eq!(m.observations[1].reading, 1);
    assert_eq!(m.observations[1].source_unit, "[degF]");
    assert!((m.readings[1].value.expect("value") - 37.0).abs() < 1e-9);
}

#[test]
fn blood_pressure_rows_of_one_channel_and_time_form_one_panel() {
    let m = parse_oru_with(
        &msg(&[
            "OBX|1|NM|150301^MDC_PRESS_CUFF_SYS^MDC|1.1.9.150301|16|265987^MDC_DIM_KILO_PASCAL^MDC|||||R|||20240501115000",
            "OBX|2|NM|150302^MDC_PRESS_CUFF_DIA^MDC|1.1.9.150302|80|266016^MDC_DIM_MMHG^MDC|||||R|||20240501115000",
            "OBX|3|NM|150301^MDC_PRESS_CUFF_SYS^MDC|1.1.9.150301|130|266016^MDC_DIM_MMHG^MDC|||||R|||20240501115500",
        ]),
        &ctx(),
    )
    .expect("parse");
    assert_eq!(m.readings.len(), 2);
    let first = &m.readings[0];
    assert_eq!(first.metric.loinc(), "85354-9");
    let sys = first
        .value_of("8480-6".parse().expect("code"))
        .expect("sys");
    assert!((sys - 120.01).abs() < 0.01, "16 kPa in mm[Hg]");
    assert_eq!(first.value_of("8462-4".parse().expect("code")), Some(80.0));
    assert_eq!(m.observations[1].reading, 0);
    assert_eq!(m.observations[2].reading, 1);
}

#[test]
fn observation_time_falls_back_to_msh_then_receive_time() {
    let row = "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC";
    let m = parse_oru_with(&msg(&[row]), &ctx()).expect("parse");
    assert_eq!(m.observations[0].time.to_rfc3339(), "2024-05-01T10:00:00Z");
    let no_msh_time = format!(
        "MSH|^~\\&|MON||||||ORU^R01|c-3|P|2.6\r{row}\rOBX|2|NM|150456^^MDC||97|262688|||||R|||2024"
    );
    let m = parse_oru_with(&no_msh_time, &ctx()).expect("parse");
    assert_eq!(m.observations[0].time, ctx().received);
    assert_eq!(kinds(&m), ["bad_time"]);
    let m = parse_oru(&no_msh_time).expect("parse");
    assert_eq!(kinds(&m), ["no_time", "bad_time"]);
}

#[test]
fn values_must_be_plain_numbers_with_a_known_unit() {
    let m = parse_oru_with(
        &msg(&[
            "OBX|1|NM|150456^^MDC||NaN|262688^^MDC",
            "OBX|2|NM|150456^^MDC||1e2|262688^^MDC",
            "OBX|3|NM|150456^^MDC||97|",
            "OBX|4|NM|150456^^MDC||97|999999^^MDC",
            "OBX|5|NM|150456^^MDC||97|kg^^UCUM",
            "OBX|6|NM|150456^^MDC||97|262688|||||X",
            "OBX|7|NM|8867-4^Heart rate^LN||+61.5|/min^^UCUM",
        ]),
        &ctx(),
    )
    .expect("parse");
    assert_eq!(
        kinds(&m),
        [
            "bad_value",
            "bad_value",
            "missing_unit",
            "unknown_unit",
            "unit_mismatch",
            "result_status"
        ]
    );
    assert_eq!(m.observations.len(), 1);
    assert_eq!(m.observations[0].value, 61.5);
    assert_eq!(m.observations[0].mdc, None);
}

#[test]
fn messages_other_than_oru_r01_are_rejected() {
    let adt = "MSH|^~\\&|A||||||ADT^A01|1|P|2.6\r";
    assert_eq!(
        parse_oru(adt),
        Err(Hl7Error::UnsupportedType {
            found: "ADT^A01".to_owned()
        })
    );
    assert_eq!(parse_oru(""), Err(Hl7Error::Empty));
    assert_eq!(
        parse_oru("PID|1\r"),
        Err(Hl7Error::NoMsh {
            found: "PID".to_owned()
        })
    );
    assert_eq!(
        parse_oru("MSH|^~\\&|A||||||ORU^R01||P\r"),
        Err(Hl7Error::NoControlId)
    );
    assert_eq!(parse_oru("MSH"), Err(Hl7Error::BadDelimiters));
}

#[test]
fn without_a_context_the_device_comes_from_msh3() {
    let m = parse_oru(&msg(&["OBX|1|NM|150456^^MDC||97|262688^^MDC"])).expect("parse");
    assert_eq!(m.readings[0].device.as_str(), "0011223344556677");
    assert_eq!(m.readings[0].received, None);
}

#[test]
fn acks_carry_the_control_id_and_escape_text() {
    let a = ack("c|1", AckCode::AE, "bad ^ value\rnext");
    assert_eq!(
        a,
        "MSH|^~\\&|VIGIL|VIGIL|||||ACK^R01^ACK|c\\F\\1|P|2.6\rMSA|AE|c\\F\\1|bad \\S\\ value next\r"
    );
    let t = Timestamp::parse("2024-05-01T10:05:07Z").expect("time");
    let a = ack_at("42", AckCode::AA, "", t);
    assert!(a.contains("|20240501100507+0000||ACK^R01^ACK|42|"), "{a}");
    assert!(a.ends_with("MSA|AA|42|\r"));
}

#[test]
fn escape_sequences_in_text_fields_are_decoded() {
    let text = "MSH|^~\\&|A\\T\\B||||||ORU^R01|x\\F\\y|P|2.6\r";
    let m = parse_oru(text).expect("parse");
    assert_eq!(m.sending_app, "A&B");
    assert_eq!(m.control_id, "x|y");
}
