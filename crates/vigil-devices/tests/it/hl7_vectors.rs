//! shared/vectors/hl7: every message yields exactly the expected observations (MDC code,
//! LOINC, value, UCUM, time), and the readings group blood pressure into one panel.

use crate::{ctx, read_shared, vector_file};
use serde_json::Value;
use vigil_devices::decoder_for;
use vigil_devices::hl7::{Hl7Message, parse_oru_with};
use vigil_devices::mllp::{MllpDecoder, frame};
use vigil_model::{Source, Timestamp};

fn messages() -> Vec<(String, Vec<Value>)> {
    vector_file("hl7/expected.json")["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let file = m["file"].as_str().expect("file").to_owned();
            (file, m["expect"].as_array().expect("expect").clone())
        })
        .collect()
}

fn parse_file(file: &str) -> Hl7Message {
    let text = read_shared(&format!("hl7/{file}"));
    parse_oru_with(&text, &ctx()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_message_yields_exactly_the_expected_observations() {
    let all = messages();
    assert!(!all.is_empty());
    for (file, expect) in all {
        let msg = parse_file(&file);
        assert_eq!(
            msg.observations.len(),
            expect.len(),
            "{file}: {:#?}",
            msg.skipped
        );
        for e in &expect {
            let mdc = u32::try_from(e["mdc"].as_u64().expect("mdc")).expect("u32");
            let found: Vec<_> = msg
                .observations
                .iter()
                .filter(|o| o.mdc == Some(mdc))
                .collect();
            assert_eq!(found.len(), 1, "{file}: MDC {mdc}");
            let o = found[0];
            assert_eq!(
                o.metric.loinc(),
                e["loinc"].as_str().expect("loinc"),
                "{mdc}"
            );
            assert_eq!(Some(o.value), e["value"].as_f64(), "{mdc}");
            assert_eq!(o.ucum, e["ucum"].as_str().expect("ucum"), "{mdc}");
            // The vector's times have no offset: read as UTC, as the adapter does.
            let t =
                Timestamp::parse(&format!("{}Z", e["time"].as_str().expect("time"))).expect("time");
            assert_eq!(o.time, t, "{mdc}");
            // The reading that carries it holds the same value at the same time.
            let r = &msg.readings[o.reading];
            assert_eq!(r.value_of(o.metric), Some(o.value), "{mdc}");
            assert_eq!(r.time, t);
            assert_eq!(r.source, Source::Hl7);
        }
    }
}

#[test]
fn the_mindray_capture_is_fully_accounted_for() {
    let msg = parse_file("mindray-vs900-oru.hl7");
    assert_eq!(msg.control_id, "1914");
    assert_eq!(msg.sending_app, "MINDRAY_VS900");
    assert_eq!(msg.sending_app_id.as_deref(), Some("00A0370098007A80"));
    assert_eq!(msg.patient, None, "PID-3 has an empty first component");
    assert!(msg.skipped.is_empty(), "{:#?}", msg.skipped);
    // SpO2, pulse rate, perfusion index, one BP panel, temperature.
    let codes: Vec<&str> = msg.readings.iter().map(|r| r.metric.loinc()).collect();
    assert_eq!(codes, ["59408-5", "8867-4", "61006-3", "85354-9", "8310-5"]);
    let bp = &msg.readings[3];
    let parts: Vec<(&str, f64)> = bp
        .components
        .iter()
        .map(|c| (c.metric.loinc(), c.value))
        .collect();
    assert_eq!(
        parts,
        [("8480-6", 147.0), ("8462-4", 90.0), ("8478-0", 109.0)]
    );
}

#[test]
fn framed_and_unframed_streams_decode_through_the_registry() {
    let text = read_shared("hl7/mindray-vs900-oru.hl7");
    let decoder = decoder_for("hl7").expect("hl7 decoder");
    let mut stream = frame(&text);
    stream.extend(frame(text.replace('\r', "\r\n")));
    let out = decoder.decode(&stream, &ctx()).expect("decode");
    assert_eq!(out.len(), 2);
    for d in &out {
        assert_eq!(d.format, "hl7");
        assert_eq!(d.readings.len(), 5);
        assert_eq!(d.fields["control_id"], "1914");
        assert!(d.fields.get("readings").is_none());
        assert_eq!(d.fields["observations"].as_array().map(Vec::len), Some(7));
    }
    // Unframed, separated by a blank line.
    let unframed = format!("{text}\r\r{text}");
    let out = decoder.decode(unframed.as_bytes(), &ctx()).expect("decode");
    assert_eq!(out.len(), 2);
    // The MLLP decoder hands back the message bytes unchanged.
    let mut d = MllpDecoder::new();
    d.push(&frame(&text));
    assert_eq!(d.next_message(), Some(Ok(text.into_bytes())));
}
