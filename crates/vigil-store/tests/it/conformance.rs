use vigil_model::{
    Assignment, Component, Device, DeviceId, DeviceKind, Event, EventKind, Metric, Patient,
    PatientId, Reading, Record, Source, Timestamp,
};
use vigil_store::{
    AlertFilter, AlertSignal, AlertStatus, ApiToken, CareTeam, IncomingRecord, IngestBatch,
    NewNotification, ReadingQuery, Store, StoreError,
};

const T0: i64 = 1_750_000_000_000;

fn pid(s: &str) -> PatientId {
    PatientId::new(s).expect("id")
}
fn did(s: &str) -> DeviceId {
    DeviceId::new(s).expect("id")
}
fn m(code: &str) -> Metric {
    code.parse().expect("code")
}

async fn enrol(store: &impl Store, patient: &str, device: &str, gateway: Option<&str>) {
    store
        .upsert_patient(Patient {
            id: pid(patient),
            name: Some(format!("Test {patient}")),
            birth_date: None,
        })
        .await
        .expect("patient");
    store
        .upsert_device(Device {
            id: did(device),
            kind: DeviceKind::Wearable,
            serial: None,
            mac: None,
            eui64: None,
            manufacturer: None,
            model: None,
            gateway: gateway.map(str::to_owned),
        })
        .await
        .expect("device");
    store
        .assign(Assignment {
            device: did(device),
            patient: pid(patient),
            from: Timestamp(0),
            to: None,
        })
        .await
        .expect("assign");
}

fn hr(device: &str, i: i64, v: f64) -> Record {
    let mut r = Reading::quantity(did(device), m("8867-4"), v, Timestamp(T0 + i * 1000));
    r.received = Some(Timestamp(T0 + i * 1000 + 200));
    r.source = Source::Simulator;
    Record::Reading(r)
}

fn batch(gateway: &str, after: u64, first_seq: u64, recs: Vec<Record>) -> IngestBatch {
    IngestBatch {
        gateway: gateway.into(),
        epoch: 7,
        after,
        records: recs
            .into_iter()
            .enumerate()
            .map(|(i, r)| IncomingRecord {
                seq: first_seq + i as u64,
                record: Ok(r),
            })
            .collect(),
        hub_received: Timestamp(T0 + 10_000_000),
        max_future_ms: 300_000,
    }
}

fn all(patient: &str) -> ReadingQuery {
    ReadingQuery {
        patient: pid(patient),
        metric: None,
        from: None,
        to: None,
        limit: usize::MAX,
        descending: false,
    }
}

pub async fn ingested_readings_are_queryable_by_metric_and_time_range(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    let recs: Vec<Record> = (0..5000)
        .map(|i| hr("w1", i, 60.0 + (i % 30) as f64))
        .collect();
    let out = s.ingest(batch("gw", 0, 1, recs)).await.expect("ingest");
    assert_eq!(
        (out.stored, out.quarantined, out.duplicates, out.cursor),
        (5000, 0, 0, 5000)
    );
    assert_eq!(out.accepted.len(), 5000);
    let got = s.readings(all("p1")).await.expect("query");
    assert_eq!(got.len(), 5000);
    assert_eq!(got[17].value, Some(77.0));
    assert_eq!(got[17].received, Some(Timestamp(T0 + 17_000 + 200)));
    assert_eq!(got[17].hub_received, Timestamp(T0 + 10_000_000));
    let q = ReadingQuery {
        metric: Some(m("8867-4")),
        from: Some(Timestamp(T0 + 1000 * 1000)),
        to: Some(Timestamp(T0 + 1999 * 1000)),
        ..all("p1")
    };
    let got = s.readings(q.clone()).await.expect("range");
    assert_eq!(got.len(), 1000);
    assert_eq!(got[0].time, Timestamp(T0 + 1000 * 1000));
    let newest = s
        .readings(ReadingQuery {
            descending: true,
            limit: 3,
            ..q
        })
        .await
        .expect("desc");
    let times: Vec<i64> = newest.iter().map(|r| (r.time.0 - T0) / 1000).collect();
    assert_eq!(times, [1999, 1998, 1997]);
    let none = s
        .readings(ReadingQuery {
            metric: Some(m("59408-5")),
            ..all("p1")
        })
        .await
        .expect("other metric");
    assert!(none.is_empty());
    let summary = s.patients().await.expect("patients");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].latest.len(), 1);
    assert_eq!(summary[0].latest[0].time, Timestamp(T0 + 4999 * 1000));
}

pub async fn the_same_batch_sent_twice_is_stored_once(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    let recs: Vec<Record> = (0..100).map(|i| hr("w1", i, 70.0)).collect();
    s.ingest(batch("gw", 0, 1, recs.clone()))
        .await
        .expect("first");
    let again = s
        .ingest(batch("gw", 0, 1, recs.clone()))
        .await
        .expect("again");
    assert_eq!(
        (again.stored, again.duplicates, again.cursor),
        (0, 100, 100)
    );
    // A resend that overlaps the stored part and extends it stores only the new tail.
    let mut more = recs[50..].to_vec();
    more.extend((100..150).map(|i| hr("w1", i, 71.0)));
    let o = s.ingest(batch("gw", 50, 51, more)).await.expect("overlap");
    assert_eq!((o.stored, o.duplicates, o.cursor), (50, 50, 150));
    assert_eq!(s.readings(all("p1")).await.expect("q").len(), 150);
    assert_eq!(s.stats().await.expect("stats").readings, 150);
}

pub async fn a_batch_claiming_a_cursor_ahead_of_the_hub_is_refused(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    let err = s
        .ingest(batch("gw", 10, 11, vec![hr("w1", 1, 70.0)]))
        .await
        .expect_err("ahead");
    assert!(
        matches!(
            err,
            vigil_store::StoreError::CursorAhead {
                claimed: 10,
                cursor: 0
            }
        ),
        "{err}"
    );
    assert!(s.readings(all("p1")).await.expect("q").is_empty());
}

pub async fn unknown_devices_are_quarantined_and_reprocessed_after_enrolment(s: &impl Store) {
    s.upsert_patient(Patient {
        id: pid("p2"),
        name: None,
        birth_date: None,
    })
    .await
    .expect("patient");
    let out = s
        .ingest(batch(
            "gw",
            0,
            1,
            (0..10).map(|i| hr("stranger", i, 80.0)).collect(),
        ))
        .await
        .expect("ingest");
    assert_eq!((out.stored, out.quarantined, out.cursor), (0, 10, 10));
    let q = s.quarantine(100, true).await.expect("quarantine");
    assert_eq!(q.len(), 10);
    assert_eq!(q[0].reason_code, "unknown_device");
    assert_eq!(
        q[0].record
            .as_ref()
            .and_then(|r| r["reading"]["value"].as_f64()),
        Some(80.0)
    );
    // Enrolling the device alone is not enough: it has no patient yet.
    s.upsert_device(Device {
        id: did("stranger"),
        kind: DeviceKind::PulseOximeter,
        serial: Some("SN1".into()),
        mac: None,
        eui64: None,
        manufacturer: None,
        model: None,
        gateway: None,
    })
    .await
    .expect("device");
    let q = s.quarantine(100, true).await.expect("quarantine");
    assert_eq!(q.len(), 10, "still unattributed");
    let r = s
        .assign(Assignment {
            device: did("stranger"),
            patient: pid("p2"),
            from: Timestamp(0),
            to: None,
        })
        .await
        .expect("assign");
    assert_eq!((r.stored, r.still_quarantined), (10, 0));
    assert!(s.quarantine(100, true).await.expect("q").is_empty());
    assert_eq!(s.readings(all("p2")).await.expect("readings").len(), 10);
    // Re-processing again stores nothing twice.
    assert_eq!(s.reprocess_quarantine().await.expect("again").stored, 0);
    assert_eq!(s.readings(all("p2")).await.expect("readings").len(), 10);
}

pub async fn a_device_moving_between_patients_is_attributed_by_reading_time(s: &impl Store) {
    for p in ["alice", "bob"] {
        s.upsert_patient(Patient {
            id: pid(p),
            name: None,
            birth_date: None,
        })
        .await
        .expect("patient");
    }
    s.upsert_device(Device {
        id: did("cuff"),
        kind: DeviceKind::BloodPressureMonitor,
        serial: None,
        mac: None,
        eui64: None,
        manufacturer: None,
        model: None,
        gateway: None,
    })
    .await
    .expect("device");
    let switch = Timestamp(T0 + 50_000);
    s.assign(Assignment {
        device: did("cuff"),
        patient: pid("alice"),
        from: Timestamp(0),
        to: Some(switch),
    })
    .await
    .expect("a");
    s.assign(Assignment {
        device: did("cuff"),
        patient: pid("bob"),
        from: switch,
        to: None,
    })
    .await
    .expect("b");
    let bp = |i: i64| {
        Record::Reading(Reading::panel(
            did("cuff"),
            m("85354-9"),
            vec![
                Component {
                    metric: m("8480-6"),
                    value: 120.0 + i as f64,
                },
                Component {
                    metric: m("8462-4"),
                    value: 80.0,
                },
            ],
            Timestamp(T0 + i * 1000),
        ))
    };
    // Sent late and out of order: attribution follows the reading's own time.
    let out = s
        .ingest(batch("gw", 0, 1, vec![bp(70), bp(10), bp(49), bp(50)]))
        .await
        .expect("ingest");
    assert_eq!(out.stored, 4);
    let a = s.readings(all("alice")).await.expect("alice");
    let b = s.readings(all("bob")).await.expect("bob");
    assert_eq!(
        a.iter().map(|r| r.components[0].value).collect::<Vec<_>>(),
        [130.0, 169.0]
    );
    assert_eq!(
        b.iter().map(|r| r.components[0].value).collect::<Vec<_>>(),
        [170.0, 190.0]
    );
    assert_eq!(
        s.assignments(Some(&did("cuff"))).await.expect("list").len(),
        2
    );
}

pub async fn impossible_values_and_future_times_are_quarantined_with_their_reason(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    let spo2 = Record::Reading(Reading::quantity(
        did("w1"),
        m("59408-5"),
        140.0,
        Timestamp(T0),
    ));
    let weight = Record::Reading(Reading::quantity(
        did("w1"),
        m("29463-7"),
        -1.0,
        Timestamp(T0),
    ));
    let future = hr("w1", 100_000, 70.0); // 100,000 s after T0: far past hub_received
    let fine = hr("w1", 1, 70.0);
    let out = s
        .ingest(batch("gw", 0, 1, vec![spo2, weight, future, fine]))
        .await
        .expect("ingest");
    assert_eq!((out.stored, out.quarantined, out.cursor), (1, 3, 4));
    let mut codes: Vec<String> = s
        .quarantine(10, true)
        .await
        .expect("q")
        .into_iter()
        .map(|e| e.reason_code)
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        ["future_time", "impossible_value", "impossible_value"]
    );
}

pub async fn a_device_enrolled_to_another_gateway_is_quarantined(s: &impl Store) {
    enrol(s, "p1", "w1", Some("gw-home")).await;
    let out = s
        .ingest(batch("gw-other", 0, 1, vec![hr("w1", 1, 70.0)]))
        .await
        .expect("ingest");
    assert_eq!(out.quarantined, 1);
    let out = s
        .ingest(batch("gw-home", 0, 1, vec![hr("w1", 2, 70.0)]))
        .await
        .expect("ingest");
    assert_eq!(out.stored, 1);
    assert_eq!(
        s.quarantine(10, true).await.expect("q")[0].reason_code,
        "wrong_gateway"
    );
}

pub async fn compaction_keeps_every_reading_and_shrinks_storage(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    let mut seq = 1;
    for b in 0..36 {
        let recs: Vec<Record> = (0..100)
            .map(|i| hr("w1", b * 100 + i, 60.0 + ((b + i) % 20) as f64))
            .collect();
        s.ingest(batch("gw", seq - 1, seq, recs))
            .await
            .expect("ingest");
        seq += 100;
    }
    let before = s.stats().await.expect("stats");
    assert_eq!(before.readings, 3600);
    assert!(before.chunks >= 36);
    let removed = s.compact().await.expect("compact");
    assert!(removed > 0);
    let after = s.stats().await.expect("stats");
    assert_eq!(after.readings, 3600);
    assert!(after.chunks < before.chunks);
    assert!(after.chunk_bytes < before.chunk_bytes);
    let got = s.readings(all("p1")).await.expect("q");
    assert_eq!(got.len(), 3600);
    assert!(got.windows(2).all(|w| w[0].time < w[1].time));
}

pub async fn latest_values_follow_device_time_not_arrival_order(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    s.ingest(batch("gw", 0, 1, vec![hr("w1", 100, 90.0)]))
        .await
        .expect("new");
    s.ingest(batch("gw", 1, 2, vec![hr("w1", 5, 50.0)]))
        .await
        .expect("late old");
    let latest = s.latest(&pid("p1")).await.expect("latest");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].value, Some(90.0));
}

pub async fn events_are_stored_per_patient(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    let fall = Record::Event(Event {
        device: did("w1"),
        time: Timestamp(T0 + 5),
        received: None,
        kind: EventKind::Fall {
            confidence: Some(0.9),
        },
        source: Source::Simulator,
        patient: None,
    });
    let out = s
        .ingest(batch("gw", 0, 1, vec![fall]))
        .await
        .expect("ingest");
    assert_eq!(out.stored, 1);
    let ev = s.events(&pid("p1"), None, None, 10).await.expect("events");
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].event.kind,
        EventKind::Fall {
            confidence: Some(0.9)
        }
    );
    assert_eq!(s.stats().await.expect("stats").events, 1);
}

pub async fn gateway_and_api_tokens_are_looked_up_by_hash_and_revocable(s: &impl Store) {
    s.create_gateway("gw-1", b"hash-1").await.expect("create");
    assert!(
        s.create_gateway("gw-1", b"hash-2").await.is_err(),
        "ids are unique"
    );
    assert_eq!(
        s.gateway_by_token(b"hash-1")
            .await
            .expect("lookup")
            .map(|g| g.id),
        Some("gw-1".into())
    );
    assert_eq!(s.gateway_by_token(b"nope").await.expect("lookup"), None);
    s.revoke_gateway("gw-1").await.expect("revoke");
    assert_eq!(s.gateway_by_token(b"hash-1").await.expect("lookup"), None);
    let t = ApiToken {
        name: "ops".into(),
        role: "admin".into(),
        created: Timestamp(T0),
        expires: None,
        revoked: false,
    };
    s.create_api_token(b"tok", t.clone()).await.expect("token");
    assert_eq!(s.api_token(b"tok").await.expect("lookup"), Some(t));
}

pub async fn separate_epochs_of_one_gateway_have_separate_cursors(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    s.ingest(batch(
        "gw",
        0,
        1,
        (0..10).map(|i| hr("w1", i, 70.0)).collect(),
    ))
    .await
    .expect("epoch 7");
    let mut b = batch("gw", 0, 1, (10..20).map(|i| hr("w1", i, 70.0)).collect());
    b.epoch = 8; // a reinstalled gateway starts its sequence again
    let out = s.ingest(b).await.expect("epoch 8");
    assert_eq!((out.stored, out.duplicates), (10, 0));
    assert_eq!(s.readings(all("p1")).await.expect("q").len(), 20);
}

pub async fn an_observation_delivered_twice_is_one_reading_in_queries_and_after_compaction(
    s: &impl Store,
) {
    enrol(s, "p1", "w1", None).await;
    // An at-least-once source (MQTT QoS 1) may deliver the same observation again: the
    // gateway gives it a new sequence number, so the cursor cannot tell.
    let a = hr("w1", 1, 70.0);
    let other_value = hr("w1", 1, 71.0);
    let out = s
        .ingest(batch("gw", 0, 1, vec![a.clone(), hr("w1", 2, 72.0)]))
        .await
        .expect("first");
    assert_eq!(out.stored, 2);
    s.ingest(batch("gw", 2, 3, vec![a.clone(), other_value]))
        .await
        .expect("again");
    let got = s.readings(all("p1")).await.expect("q");
    let values: Vec<f64> = got.iter().filter_map(|r| r.value).collect();
    assert_eq!(
        values,
        [70.0, 71.0, 72.0],
        "the repeat is gone, a different value at the same instant is kept"
    );
    let desc = s
        .readings(ReadingQuery {
            descending: true,
            ..all("p1")
        })
        .await
        .expect("desc");
    assert_eq!(desc.len(), 3);
    assert_eq!(desc[0].value, Some(72.0));
    while s.compact().await.expect("compact") > 0 {}
    assert_eq!(s.stats().await.expect("stats").readings, 3);
}

fn signal(patient: &str, rule: &str, t: i64, source: vigil_store::AlertSource) -> AlertSignal {
    AlertSignal {
        patient: pid(patient),
        rule_id: rule.into(),
        severity: "warning".into(),
        message: format!("{rule} at {t}"),
        value: Some(t as f64),
        time: Timestamp(T0 + t),
        seen: Timestamp(T0 + t),
        source,
    }
}

const NOW: Timestamp = Timestamp(T0 + 50_000_000);

pub async fn a_second_finding_for_the_same_patient_and_rule_joins_the_open_alert(s: &impl Store) {
    use vigil_store::AlertSource::Hub;
    let first = s
        .raise_alert(signal("p1", "tachycardia", 1000, Hub), NOW)
        .await
        .expect("raise");
    let opened = first.opened.expect("a new alert opens");
    assert_eq!(opened.to, AlertStatus::Open);
    assert_eq!(opened.from, None);
    assert_eq!(first.alert.opened_at, Timestamp(T0 + 1000));
    let mut later = signal("p1", "tachycardia", 5000, Hub);
    later.severity = "critical".into();
    let second = s.raise_alert(later, NOW).await.expect("join");
    assert!(second.opened.is_none());
    assert_eq!(second.alert.id, first.alert.id);
    assert_eq!(second.alert.last_seen, Timestamp(T0 + 5000));
    assert_eq!(second.alert.opened_at, Timestamp(T0 + 1000));
    assert_eq!(second.alert.severity, "critical");
    // Another rule or another patient is another alert.
    let other_rule = s
        .raise_alert(signal("p1", "fever", 5000, Hub), NOW)
        .await
        .expect("other rule");
    let other_patient = s
        .raise_alert(signal("p2", "tachycardia", 5000, Hub), NOW)
        .await
        .expect("other patient");
    assert_ne!(other_rule.alert.id, first.alert.id);
    assert_ne!(other_patient.alert.id, first.alert.id);
    let open = s
        .alerts(AlertFilter {
            status: Some(AlertStatus::Open),
            limit: 100,
            ..AlertFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(open.len(), 3);
    let p1 = s
        .alerts(AlertFilter {
            active: true,
            patient: Some(pid("p1")),
            limit: 100,
            ..AlertFilter::default()
        })
        .await
        .expect("list p1");
    assert_eq!(p1.len(), 2);
}

pub async fn alert_lifecycle_is_recorded_as_append_only_transitions(s: &impl Store) {
    use vigil_store::AlertSource::Hub;
    let a = s
        .raise_alert(signal("p1", "bradycardia", 0, Hub), NOW)
        .await
        .expect("raise")
        .alert;
    let (acked, t_ack) = s
        .acknowledge_alert(a.id, "dr-who", Timestamp(T0 + 10), Some(Timestamp(T0 + 99)))
        .await
        .expect("ack");
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.acknowledged_by.as_deref(), Some("dr-who"));
    assert_eq!(acked.silence_until, Some(Timestamp(T0 + 99)));
    assert_eq!(
        (t_ack.from, t_ack.to, t_ack.actor.as_str()),
        (Some(AlertStatus::Open), AlertStatus::Acknowledged, "dr-who")
    );
    // While acknowledged, a new finding still joins it.
    let joined = s
        .raise_alert(signal("p1", "bradycardia", 20, Hub), NOW)
        .await
        .expect("join");
    assert_eq!(joined.alert.id, a.id);
    assert!(joined.opened.is_none());
    assert!(matches!(
        s.escalate_alert(a.id, 1, Timestamp(T0 + 30)).await,
        Err(StoreError::Conflict(_))
    ));
    let (resolved, t_res) = s
        .resolve_alert(a.id, "dr-who", Timestamp(T0 + 40), Some("treated".into()))
        .await
        .expect("resolve");
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.note.as_deref(), Some("treated"));
    assert_eq!(t_res.note.as_deref(), Some("treated"));
    assert!(matches!(
        s.resolve_alert(a.id, "dr-who", Timestamp(T0 + 50), None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.acknowledge_alert(a.id, "dr-who", Timestamp(T0 + 50), None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.acknowledge_alert(9999, "dr-who", Timestamp(T0 + 50), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // After resolution a later finding opens a new alert.
    let b = s
        .raise_alert(signal("p1", "bradycardia", 100, Hub), NOW)
        .await
        .expect("reopen");
    assert_ne!(b.alert.id, a.id);
    let (esc, t_esc) = s
        .escalate_alert(b.alert.id, 1, Timestamp(T0 + 200))
        .await
        .expect("escalate");
    assert_eq!(
        (esc.status, esc.escalation_level),
        (AlertStatus::Escalated, 1)
    );
    assert_eq!(t_esc.actor, "system");
    let all = s.alert_transitions(0, 100).await.expect("all");
    let ids: Vec<i64> = all.iter().map(|t| t.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let kinds: Vec<AlertStatus> = all.iter().map(|t| t.to).collect();
    assert_eq!(
        kinds,
        [
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            AlertStatus::Resolved,
            AlertStatus::Open,
            AlertStatus::Escalated
        ]
    );
    assert_eq!(
        s.latest_transition_id().await.expect("latest"),
        *ids.last().expect("ids")
    );
    let since = s.alert_transitions(ids[2], 100).await.expect("since");
    assert_eq!(since.len(), 2);
    assert_eq!(since[0].alert_id, b.alert.id);
    assert_eq!(s.transitions_of(a.id).await.expect("of a").len(), 3);
}

pub async fn an_edge_alert_synced_late_keeps_its_original_time(s: &impl Store) {
    use vigil_store::AlertSource::{Edge, Hub};
    // The hub saw the condition at +60 s; the gateway's own alert from +10 s arrives later.
    let hub = s
        .raise_alert(signal("p1", "spo2-desaturation", 60_000, Hub), NOW)
        .await
        .expect("hub");
    let edge = s
        .raise_alert(signal("p1", "spo2-desaturation", 10_000, Edge), NOW)
        .await
        .expect("edge");
    assert!(edge.opened.is_none());
    assert_eq!(edge.alert.id, hub.alert.id);
    assert_eq!(edge.alert.opened_at, Timestamp(T0 + 10_000));
    assert_eq!(edge.alert.source, vigil_store::AlertSource::Edge);
    assert_eq!(edge.alert.last_seen, Timestamp(T0 + 60_000));
    s.resolve_alert(hub.alert.id, "system", Timestamp(T0 + 120_000), None)
        .await
        .expect("resolve");
    // An edge alert from inside the resolved span opens nothing.
    let late = s
        .raise_alert(signal("p1", "spo2-desaturation", 30_000, Edge), NOW)
        .await
        .expect("late edge");
    assert!(late.opened.is_none());
    assert_eq!(late.alert.id, hub.alert.id);
    // An edge alert first (offline gateway) opens with the reading's time.
    let first = s
        .raise_alert(signal("p2", "fever", 5_000, Edge), NOW)
        .await
        .expect("edge first");
    assert_eq!(first.alert.opened_at, Timestamp(T0 + 5_000));
    assert_eq!(first.alert.created, NOW);
    assert_eq!(first.opened.expect("opened").actor, "edge");
}

pub async fn care_teams_and_the_on_call_list_are_stored(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    assert_eq!(
        s.care_team(&pid("p1")).await.expect("empty"),
        CareTeam::default()
    );
    let team = CareTeam {
        primary: vec!["dr-a".into()],
        backup: vec!["dr-b".into(), "dr-c".into()],
        caregivers: vec!["daughter".into()],
    };
    s.set_care_team(&pid("p1"), team.clone())
        .await
        .expect("set");
    assert_eq!(s.care_team(&pid("p1")).await.expect("get"), team);
    let smaller = CareTeam {
        primary: vec!["dr-z".into()],
        ..CareTeam::default()
    };
    s.set_care_team(&pid("p1"), smaller.clone())
        .await
        .expect("replace");
    assert_eq!(s.care_team(&pid("p1")).await.expect("get"), smaller);
    assert!(matches!(
        s.set_care_team(&pid("nobody"), team).await,
        Err(StoreError::NotFound(_))
    ));
    s.set_on_call(vec!["night-1".into(), "night-2".into()])
        .await
        .expect("on call");
    assert_eq!(s.on_call().await.expect("on call"), ["night-1", "night-2"]);
}

pub async fn notifications_are_retried_then_dead_lettered(s: &impl Store) {
    let n = |target: &str| NewNotification {
        alert_id: Some(1),
        channel: "webhook".into(),
        target: target.into(),
        payload: serde_json::json!({"alert": 1}),
    };
    s.enqueue_notifications(vec![n("a"), n("b")], Timestamp(T0))
        .await
        .expect("enqueue");
    assert!(
        s.due_notifications(Timestamp(T0 - 1), 10)
            .await
            .expect("none due")
            .is_empty()
    );
    let due = s.due_notifications(Timestamp(T0), 10).await.expect("due");
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].payload, serde_json::json!({"alert": 1}));
    s.notification_delivered(due[0].id)
        .await
        .expect("delivered");
    s.notification_failed(due[1].id, "503", Some(Timestamp(T0 + 1000)))
        .await
        .expect("retry");
    assert!(
        s.due_notifications(Timestamp(T0 + 999), 10)
            .await
            .expect("not yet")
            .is_empty()
    );
    let again = s
        .due_notifications(Timestamp(T0 + 1000), 10)
        .await
        .expect("again");
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    s.notification_failed(again[0].id, "503", None)
        .await
        .expect("dead");
    let dead = s.notifications(Some("dead"), 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].attempts, dead[0].last_error.as_deref()),
        (2, Some("503"))
    );
    assert_eq!(s.notifications(None, 10).await.expect("all").len(), 2);
}

pub async fn a_silenced_acknowledgement_reopens_when_its_silence_runs_out(s: &impl Store) {
    use vigil_store::AlertSource::Hub;
    assert_eq!(s.latest_transition_id().await.expect("none yet"), 0);
    let a = s
        .raise_alert(signal("p1", "fever", 0, Hub), NOW)
        .await
        .expect("raise")
        .alert;
    assert!(matches!(
        s.reopen_alert(a.id, Timestamp(T0 + 5)).await,
        Err(StoreError::Conflict(_))
    ));
    s.escalate_alert(a.id, 2, Timestamp(T0 + 5))
        .await
        .expect("escalate");
    s.acknowledge_alert(a.id, "dr-a", Timestamp(T0 + 10), Some(Timestamp(T0 + 20)))
        .await
        .expect("ack");
    let (re, t) = s
        .reopen_alert(a.id, Timestamp(T0 + 20))
        .await
        .expect("reopen");
    assert_eq!(re.status, AlertStatus::Open);
    assert_eq!(re.escalation_level, 0);
    assert_eq!(re.escalated_at, Some(Timestamp(T0 + 20)));
    assert_eq!(re.silence_until, None);
    assert_eq!(
        (t.from, t.to, t.actor.as_str()),
        (Some(AlertStatus::Acknowledged), AlertStatus::Open, "system")
    );
}

pub async fn rule_settings_are_stored_per_patient(s: &impl Store) {
    enrol(s, "p1", "w1", None).await;
    enrol(s, "p2", "w2", None).await;
    assert_eq!(s.rule_settings(&pid("p1")).await.expect("none"), None);
    assert!(s.all_rule_settings().await.expect("all").is_empty());
    let a =
        serde_json::json!({"news2": {"spo2_scale": 2}, "thresholds": {"hypo_level1_mg_dl": 80.0}});
    s.set_rule_settings(&pid("p1"), a.clone(), NOW)
        .await
        .expect("set");
    assert_eq!(s.rule_settings(&pid("p1")).await.expect("get"), Some(a));
    let b = serde_json::json!({"news2": {"spo2_scale": 1}});
    s.set_rule_settings(&pid("p1"), b.clone(), NOW)
        .await
        .expect("replace");
    assert_eq!(
        s.rule_settings(&pid("p1")).await.expect("get"),
        Some(b.clone())
    );
    assert_eq!(s.rule_settings(&pid("p2")).await.expect("other"), None);
    assert_eq!(
        s.all_rule_settings().await.expect("all"),
        vec![(pid("p1"), b.clone())]
    );
    assert!(matches!(
        s.set_rule_settings(&pid("nobody"), b, NOW).await,
        Err(StoreError::NotFound(_))
    ));
}
