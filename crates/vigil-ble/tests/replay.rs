//! The shipped recordings (`recordings/*.jsonl`, payloads from shared/vectors/ble-gatt.json)
//! replayed through a `BleSession`: exact canonical readings, subscription decisions and
//! quarantine.

use std::time::Duration;
use vigil_ble::{
    BleAddress, BleSession, Delivery, Ignored, Outcome, Recording, Replay, session::PeerState,
};
use vigil_model::{Flags, Record, Timestamp};

/// The replay start: every receive time is `START + t_ms`.
const START: Timestamp = Timestamp::from_secs(1_795_000_000);

const RECORDINGS: [&str; 5] = [
    "heart-rate-strap",
    "bp-cuff",
    "pulse-oximeter",
    "corrupt-payload",
    "ward-mixed",
];

fn recording(name: &str) -> Recording {
    let path = format!("{}/recordings/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Recording::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn replay(name: &str) -> (Replay, BleSession) {
    let mut session = BleSession::default();
    let r = recording(name).replay(&mut session, START);
    (r, session)
}

fn at(t_ms: i64) -> Timestamp {
    START.saturating_add_millis(t_ms)
}

fn addr(s: &str) -> BleAddress {
    BleAddress::parse(s).expect("address")
}

/// A reading as (device, LOINC, value or components, device time, receive time, flag names).
type Row = (
    String,
    &'static str,
    Vec<f64>,
    Timestamp,
    Option<Timestamp>,
    Vec<&'static str>,
);

fn rows(records: &[&Record]) -> Vec<Row> {
    records
        .iter()
        .map(|rec| {
            let Record::Reading(r) = rec else {
                panic!("an event from a GATT payload: {rec:?}")
            };
            let values = match r.value {
                Some(v) => vec![v],
                None => r.components.iter().map(|c| c.value).collect(),
            };
            (
                r.device.to_string(),
                r.metric.loinc(),
                values,
                r.time,
                r.received,
                r.flags.names().collect(),
            )
        })
        .collect()
}

fn readings(records: &[&Record]) -> Vec<vigil_model::Reading> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Reading(r) => Some(r.clone()),
            Record::Event(_) => None,
        })
        .collect()
}

#[test]
fn heart_rate_strap_readings_follow_skin_contact_across_a_reconnect() {
    let (r, _) = replay("heart-rate-strap");
    let dev = "ble-c47c8d6a210f".to_owned();
    let hr = |v: f64, t: i64, flags: Vec<&'static str>| {
        (dev.clone(), "8867-4", vec![v], at(t), Some(at(t)), flags)
    };
    assert_eq!(
        rows(&r.records()),
        [
            hr(72.0, 1900, vec![]),
            hr(85.0, 2900, vec![]),
            hr(255.0, 3900, vec!["questionable"]),
            hr(72.0, 4900, vec![]),
            hr(60.0, 8800, vec![]),
        ]
    );
    let rs = readings(&r.records());
    assert!(rs.iter().all(|x| x.metric.ucum() == "/min"));
    assert!(!rs[2].flags.trustworthy(), "no skin contact");
    assert!(rs[3].flags.trustworthy());
    assert!(r.rejected().is_empty());
}

#[test]
fn heart_rate_strap_is_connected_subscribed_by_notification_and_reconnected_after_a_second() {
    let (r, session) = replay("heart-rate-strap");
    let strap = addr("C4:7C:8D:6A:21:0F");
    let d = r.decisions();
    assert_eq!(d.len(), 6, "{d:#?}");
    assert_eq!(
        d[0],
        &Outcome::Connect {
            address: strap.clone()
        }
    );
    assert_eq!(
        d[1],
        &Outcome::Ignore {
            address: addr("F0:0D:00:00:00:01"),
            reason: Ignored::NotAHealthDevice
        }
    );
    let Outcome::Subscribe { subscriptions, .. } = d[2] else {
        panic!("{:?}", d[2])
    };
    let plan: Vec<_> = subscriptions
        .iter()
        .map(|s| (s.service_uuid, s.characteristic_uuid(), s.delivery))
        .collect();
    assert_eq!(plan, [(0x180D, 0x2A37, Delivery::Notify)]);
    assert_eq!(
        d[3],
        &Outcome::ReconnectAfter {
            address: strap.clone(),
            attempt: 1,
            delay: Duration::from_secs(1)
        }
    );
    assert_eq!(
        d[4],
        &Outcome::Connect {
            address: strap.clone()
        }
    );
    assert!(matches!(d[5], Outcome::Subscribe { .. }));
    assert_eq!(session.state(&strap), Some(&PeerState::Connected));
    assert_eq!(session.name(&strap), Some("HR-STRAP-21"));
}

#[test]
fn bp_cuff_pressures_while_inflating_yield_nothing_and_the_final_measurement_one_panel() {
    let (r, session) = replay("bp-cuff");
    let cuff = addr("00:5F:BF:10:22:33");
    // Three intermediate cuff pressures: handled (the sink gets nothing), not rejected.
    let empty = r
        .steps
        .iter()
        .filter(|s| matches!(&s.result, Ok(Outcome::Records { records, .. }) if records.is_empty()))
        .count();
    assert_eq!(empty, 3);
    let dev = "ble-005fbf102233".to_owned();
    // B1: the device's timestamp has no year, so the reading takes the receive time and is
    // CLOCK_SUSPECT; body movement, loose cuff and improper position set their flags.
    let flags = vec!["questionable", "motion_artifact", "clock_suspect"];
    assert_eq!(
        rows(&r.records()),
        [
            (
                dev.clone(),
                "85354-9",
                vec![138.0, 88.0, 120.0],
                at(30_000),
                Some(at(30_000)),
                flags.clone()
            ),
            (
                dev,
                "8867-4",
                vec![60.0],
                at(30_000),
                Some(at(30_000)),
                flags
            ),
        ]
    );
    let rs = readings(&r.records());
    let comps: Vec<_> = rs[0]
        .components
        .iter()
        .map(|c| (c.metric.loinc(), c.metric.ucum()))
        .collect();
    assert_eq!(
        comps,
        [
            ("8480-6", "mm[Hg]"),
            ("8462-4", "mm[Hg]"),
            ("8478-0", "mm[Hg]")
        ]
    );
    assert!(!rs[0].flags.trustworthy());
    let d = r.decisions();
    let Outcome::Subscribe { subscriptions, .. } = d[1] else {
        panic!("{:?}", d[1])
    };
    let plan: Vec<_> = subscriptions
        .iter()
        .map(|s| (s.characteristic_uuid(), s.delivery))
        .collect();
    assert_eq!(
        plan,
        [(0x2A35, Delivery::Indicate), (0x2A36, Delivery::Notify)]
    );
    // The cuff switched itself off after measuring: a first, short backoff.
    assert_eq!(
        session.state(&cuff),
        Some(&PeerState::Backoff { attempt: 1 })
    );
}

#[test]
fn questionable_pulse_oximeter_spot_check_is_not_trustworthy_and_keeps_its_device_time() {
    let (r, _) = replay("pulse-oximeter");
    let dev = "ble-e81a7c004b02".to_owned();
    let row = |loinc, v: f64, t: Timestamp, rx: i64, flags: Vec<&'static str>| {
        (dev.clone(), loinc, vec![v], t, Some(at(rx)), flags)
    };
    let spot_time = Timestamp::parse("2024-11-29T23:08:57Z").expect("time");
    let spot_flags = vec![
        "questionable",
        "low_perfusion",
        "measurement_ongoing",
        "device_fault",
    ];
    assert_eq!(
        rows(&r.records()),
        [
            row("59408-5", 100.0, at(1600), 1600, vec![]),
            row("8867-4", 90.0, at(1600), 1600, vec![]),
            row("59408-5", 95.0, at(2600), 2600, vec![]),
            row("8867-4", 90.0, at(2600), 2600, vec![]),
            row("61006-3", 8.7, at(2600), 2600, vec![]),
            row("59408-5", 94.0, spot_time, 9000, spot_flags.clone()),
            row("8867-4", 147.0, spot_time, 9000, spot_flags.clone()),
            row("61006-3", 8.7, spot_time, 9000, spot_flags),
        ]
    );
    let rs = readings(&r.records());
    assert!(rs[..5].iter().all(|x| x.flags.trustworthy()), "continuous");
    assert!(rs[5..].iter().all(|x| !x.flags.trustworthy()), "spot check");
    assert!(rs[5].flags.contains(Flags::QUESTIONABLE));
    assert_eq!(rs[5].metric.ucum(), "%");
    let d = r.decisions();
    let Outcome::Subscribe { subscriptions, .. } = d[1] else {
        panic!("{:?}", d[1])
    };
    let plan: Vec<_> = subscriptions
        .iter()
        .map(|s| (s.characteristic_uuid(), s.delivery))
        .collect();
    assert_eq!(
        plan,
        [(0x2A5E, Delivery::Indicate), (0x2A5F, Delivery::Notify)]
    );
}

#[test]
fn corrupt_payload_is_quarantined_with_its_bytes_and_the_next_one_still_decodes() {
    let (r, _) = replay("corrupt-payload");
    let rejected = r.rejected();
    assert_eq!(rejected.len(), 1);
    let q = rejected[0];
    assert_eq!(q.code(), "undecodable");
    assert_eq!(q.address, addr("00:5F:BF:10:44:55"));
    assert_eq!(q.device.as_str(), "ble-005fbf104455");
    assert_eq!(q.characteristic_uuid, 0x2A35);
    assert_eq!(q.bytes, [0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
    assert_eq!(q.received, at(1500));
    assert_eq!(
        q.reason.to_string(),
        "Blood Pressure Measurement (0x2A35): payload is 6 bytes, shorter than the 7-byte minimum"
    );
    // B2: 18.9/11.0 (15.9) kPa, converted to mm[Hg] by the registry; loose cuff.
    let rs = readings(&r.records());
    assert_eq!(rs.len(), 2);
    let mmhg: Vec<f64> = rs[0].components.iter().map(|c| c.value).collect();
    let centi: Vec<f64> = mmhg.iter().map(|v| (v * 100.0).round() / 100.0).collect();
    assert_eq!(centi, [141.76, 82.51, 119.26]);
    assert_eq!(rs[0].flags, Flags::QUESTIONABLE);
    assert_eq!(rs[1].value, Some(60.0));
    assert_eq!(rs[0].time, at(2500));
}

#[test]
fn ward_devices_get_their_own_ids_and_the_subscriptions_their_services_mandate() {
    let (r, _) = replay("ward-mixed");
    let plans: Vec<Vec<(u16, Delivery)>> = r
        .decisions()
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Subscribe { subscriptions, .. } => Some(
                subscriptions
                    .iter()
                    .map(|s| (s.characteristic_uuid(), s.delivery))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        plans,
        [
            vec![(0x2A1C, Delivery::Indicate)],
            vec![(0x2A9D, Delivery::Indicate)],
            vec![(0x2A18, Delivery::Notify)],
        ]
    );
    let got: Vec<_> = rows(&r.records())
        .into_iter()
        .map(|(d, l, v, t, _, f)| (d, l, v, t, f))
        .collect();
    let t1 = Timestamp::parse("2012-12-05T11:50:27Z").expect("t1");
    let g1 = Timestamp::parse("2019-02-27T11:05:30Z").expect("g1");
    assert_eq!(
        got,
        [
            ("ble-112233445566".into(), "8310-5", vec![37.6], t1, vec![]),
            (
                "ble-112233445577".into(),
                "29463-7",
                vec![70.0],
                at(1100),
                vec![]
            ),
            (
                "ble-112233445577".into(),
                "39156-5",
                vec![24.5],
                at(1100),
                vec![]
            ),
            (
                "ble-112233445577".into(),
                "8302-2",
                vec![175.0],
                at(1100),
                vec![]
            ),
            (
                "ble-112233445588".into(),
                "2339-0",
                vec![3_000_000.0],
                g1,
                vec!["questionable", "invalid", "low_battery"]
            ),
        ]
    );
}

#[test]
fn shipped_recordings_round_trip_through_jsonl() {
    for name in RECORDINGS {
        let r = recording(name);
        assert!(!r.events.is_empty(), "{name}");
        let again = Recording::parse(&r.to_jsonl()).expect(name);
        let strip = |r: &Recording| -> Vec<_> {
            r.events
                .iter()
                .map(|e| (e.t_ms, e.event.clone(), e.note.clone()))
                .collect()
        };
        assert_eq!(strip(&again), strip(&r), "{name}");
    }
}

#[test]
fn recorded_payloads_named_after_a_vector_are_that_vector_byte_for_byte() {
    let path = format!(
        "{}/../../../shared/vectors/ble-gatt.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("vectors json");
    let vectors = doc["vectors"].as_array().expect("vectors");
    let mut checked = 0;
    for name in RECORDINGS {
        for e in recording(name).events {
            let (
                vigil_ble::BleEvent::Notification {
                    characteristic_uuid,
                    bytes,
                    ..
                },
                Some(note),
            ) = (&e.event, &e.note)
            else {
                continue;
            };
            let Some((id, _)) = note.split_once(':') else {
                continue;
            };
            let v = vectors
                .iter()
                .find(|v| v["id"] == id)
                .unwrap_or_else(|| panic!("{name} line {}: no vector {id}", e.line));
            assert_eq!(
                v["uuid"].as_str(),
                Some(format!("{characteristic_uuid:04X}").as_str()),
                "{name} line {}",
                e.line
            );
            assert_eq!(
                v["hex"].as_str().map(str::to_ascii_uppercase),
                Some(hex::encode_upper(bytes)),
                "{name} line {}",
                e.line
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "every vector-named payload was checked");
}
