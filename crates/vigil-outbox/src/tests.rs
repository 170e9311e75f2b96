use super::*;
use vigil_model::{DeviceId, Event, EventKind, Metric, Reading, Source};

fn key() -> SecretKey {
    SecretKey::from_bytes([7; 32])
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn hr(i: i64) -> Record {
    let m: Metric = "8867-4".parse().expect("hr");
    Record::Reading(Reading::quantity(
        DeviceId::new("wear-1").expect("id"),
        m,
        60.0 + (i % 40) as f64,
        Timestamp(1_700_000_000_000 + i * 1000),
    ))
}

fn weight(i: i64) -> Record {
    let m: Metric = "29463-7".parse().expect("weight");
    Record::Reading(Reading::quantity(
        DeviceId::new("scale-1").expect("id"),
        m,
        70.0,
        Timestamp(1_700_000_000_000 + i * 1000),
    ))
}

fn fall(i: i64) -> Record {
    Record::Event(Event {
        device: DeviceId::new("wear-1").expect("id"),
        time: Timestamp(1_700_000_000_000 + i),
        received: None,
        kind: EventKind::Fall { confidence: None },
        source: Source::Simulator,
        patient: None,
    })
}

fn seqs(ob: &Outbox) -> Vec<u64> {
    ob.read_after(0, usize::MAX >> 1, usize::MAX)
        .expect("read")
        .iter()
        .map(|p| p.seq)
        .collect()
}

#[test]
fn appended_records_survive_reopen_in_order_with_receive_time() {
    let d = dir();
    let path = d.path().join("outbox.db");
    let epoch;
    {
        let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open");
        let r = ob
            .append_blocking((0..100).map(hr).collect())
            .expect("append");
        assert_eq!((r.first_seq, r.last_seq, r.accepted), (1, 100, 100));
        let r = ob.append_blocking(vec![weight(1)]).expect("append");
        assert_eq!(r.first_seq, 101);
        epoch = ob.epoch();
        ob.close();
    }
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("reopen");
    assert_eq!(ob.epoch(), epoch, "epoch is stable across reopen");
    let all = ob.read_after(0, 1000, usize::MAX).expect("read");
    assert_eq!(all.len(), 101);
    let first = Outbox::decode(&all[0].payload).expect("decode");
    assert!(
        first.received().is_some(),
        "gateway receive time is stamped"
    );
    assert_eq!(ob.stats().depth, 101);
    assert!(ob.stats().oldest_unsent_ms.is_some());
}

#[test]
fn confirmed_records_are_deleted_and_sequence_numbers_are_never_reused() {
    let d = dir();
    let path = d.path().join("outbox.db");
    {
        let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open");
        ob.append_blocking((0..10).map(hr).collect())
            .expect("append");
        ob.confirm_blocking(10).expect("confirm");
        assert_eq!(ob.stats().depth, 0);
        assert_eq!(ob.stats().bytes, 0);
        assert_eq!(ob.stats().oldest_unsent_ms, None);
        ob.close();
    }
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("reopen");
    assert_eq!(ob.confirmed(), 10);
    let r = ob.append_blocking(vec![hr(1)]).expect("append");
    assert_eq!(r.first_seq, 11, "an emptied outbox continues its sequence");
}

#[test]
fn a_new_outbox_file_gets_a_new_epoch() {
    let d = dir();
    let a = Outbox::open(OutboxConfig::new(d.path().join("a.db"), key())).expect("a");
    let b = Outbox::open(OutboxConfig::new(d.path().join("b.db"), key())).expect("b");
    assert_ne!(a.epoch(), b.epoch());
}

#[test]
fn at_its_bound_the_outbox_thins_streams_and_never_drops_spot_readings_or_events() {
    let d = dir();
    let mut cfg = OutboxConfig::new(d.path().join("o.db"), key());
    cfg.max_bytes = 40_000;
    let ob = Outbox::open(cfg).expect("open");
    let mut spot_sent = 0;
    for i in 0..200 {
        ob.append_blocking((0..20).map(|j| hr(i * 20 + j)).collect())
            .expect("stream append");
        if i % 10 == 0 {
            ob.append_blocking(vec![weight(i), fall(i)])
                .expect("spot append");
            spot_sent += 2;
        }
    }
    let s = ob.stats();
    assert!(s.thinned_total > 0, "stream samples were thinned");
    assert!(
        s.bytes <= 40_000 + 4_000,
        "bytes {} within bound plus reserve",
        s.bytes
    );
    let kept: Vec<Record> = ob
        .read_after(0, 1_000_000, usize::MAX)
        .expect("read")
        .iter()
        .map(|p| Outbox::decode(&p.payload).expect("decode"))
        .collect();
    let spot = kept.iter().filter(|r| !r.is_stream_sample()).count();
    assert_eq!(spot, spot_sent, "every spot reading and event is kept");
    assert_eq!(s.depth as usize, kept.len());
}

#[test]
fn when_only_spot_data_fills_it_the_outbox_refuses_with_backpressure() {
    let d = dir();
    let mut cfg = OutboxConfig::new(d.path().join("o.db"), key());
    cfg.max_bytes = 5_000;
    let ob = Outbox::open(cfg).expect("open");
    let mut refused = false;
    for i in 0..1000 {
        match ob.append_blocking(vec![weight(i)]) {
            Ok(_) => {}
            Err(OutboxError::Full { .. }) => {
                refused = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused, "a full outbox refuses instead of dropping");
    assert!(matches!(
        ob.append_blocking(vec![hr(1)]),
        Err(OutboxError::Full { .. })
    ));
    assert!(ob.stats().refused_total >= 2);
    // Confirming frees room again.
    let last = ob.stats().last_seq;
    ob.confirm_blocking(last).expect("confirm");
    ob.append_blocking(vec![weight(1)]).expect("room again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_commits_and_get_disjoint_sequences() {
    let d = dir();
    let ob = Outbox::open(OutboxConfig::new(d.path().join("o.db"), key())).expect("open");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let ob = ob.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..50 {
                let r = ob.append(vec![hr(t * 1000 + i)]).await.expect("append");
                got.push(r.first_seq);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 400);
    assert_eq!(seqs(&ob).len(), 400);
    assert!(ob.stats().commits_total <= 400);
}

/// Every byte of the outbox files: the database, its WAL and shared memory.
fn raw_bytes(path: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn marked(i: i64) -> Record {
    let m: Metric = "8867-4".parse().expect("hr");
    let mut r = Reading::quantity(
        DeviceId::new("MARKERDEVICE-77").expect("id"),
        m,
        123.456_789,
        Timestamp(1_700_000_000_000 + i * 1000),
    );
    r.patient = Some(vigil_model::PatientId::new("MARKERPATIENT-42").expect("patient"));
    Record::Reading(r)
}

#[test]
fn patient_ids_device_ids_and_values_never_reach_the_files_in_clear() {
    let d = dir();
    let path = d.path().join("o.db");
    // Control: the markers are in the encoded records, so finding none on disk means something.
    let plain = postcard::to_stdvec(&marked(0)).expect("encode");
    let value = 123.456_789f64.to_le_bytes();
    assert!(contains(&plain, b"MARKERPATIENT-42") && contains(&plain, b"MARKERDEVICE-77"));
    assert!(contains(&plain, &value));
    {
        let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open");
        ob.append_blocking((0..500).map(marked).collect())
            .expect("append");
        // Without a checkpoint the records sit in the WAL: read it before closing.
        let raw = raw_bytes(&path);
        assert!(raw.len() > 500 * plain.len(), "the records are on disk");
        for m in [&b"MARKERPATIENT-42"[..], b"MARKERDEVICE-77", &value] {
            assert!(!contains(&raw, m), "{:?} found in the outbox files", m);
        }
        // And they still come back whole with the key.
        let back = ob.read_after(0, 1000, usize::MAX).expect("read");
        assert_eq!(back.len(), 500);
        assert_eq!(Outbox::decode(&back[0].payload).expect("decode"), {
            let mut r = marked(0);
            r.set_received(
                Outbox::decode(&back[0].payload)
                    .expect("d")
                    .received()
                    .expect("rx"),
            );
            r
        });
        ob.close();
    }
    let raw = raw_bytes(&path);
    for m in [&b"MARKERPATIENT-42"[..], b"MARKERDEVICE-77", &value] {
        assert!(!contains(&raw, m), "{:?} found after close", m);
    }
}

#[test]
fn opening_with_another_key_fails_clearly_and_changes_nothing() {
    let d = dir();
    let path = d.path().join("o.db");
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open");
    ob.append_blocking(vec![marked(1)]).expect("append");
    ob.close();
    drop(ob);
    let err = Outbox::open(OutboxConfig::new(&path, SecretKey::from_bytes([8; 32])))
        .expect_err("wrong key");
    assert!(matches!(err, OutboxError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("another key"), "{err}");
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("right key");
    assert_eq!(seqs(&ob), vec![1]);
}

#[test]
fn a_record_altered_on_disk_is_quarantined_never_decoded_and_the_others_still_read() {
    let d = dir();
    let path = d.path().join("o.db");
    {
        let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open");
        ob.append_blocking((0..10).map(marked).collect())
            .expect("append");
        ob.close();
    }
    {
        let c = Connection::open(&path).expect("raw open");
        let mut p: Vec<u8> = c
            .query_row("SELECT payload FROM outbox WHERE seq = 4", [], |r| r.get(0))
            .expect("row");
        let i = p.len() / 2;
        p[i] ^= 0x01;
        c.execute("UPDATE outbox SET payload = ?1 WHERE seq = 4", [p])
            .expect("flip");
        // A swapped pair of rows: each ciphertext is bound to its own sequence number.
        c.execute_batch(
            "UPDATE outbox SET seq = 100 WHERE seq = 7;
             UPDATE outbox SET seq = 7 WHERE seq = 8;
             UPDATE outbox SET seq = 8 WHERE seq = 100;",
        )
        .expect("swap");
    }
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("reopen");
    let got = ob.read_after(0, 100, usize::MAX).expect("read");
    let seqs_read: Vec<u64> = got.iter().map(|p| p.seq).collect();
    assert_eq!(seqs_read, vec![1, 2, 3, 5, 6, 9, 10]);
    for p in &got {
        Outbox::decode(&p.payload).expect("the intact records decode");
    }
    // The writer moves the bad rows aside; reading again no longer meets them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ob.stats().corrupt < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(ob.stats().corrupt, 3);
    assert_eq!(ob.stats().depth, 7);
    assert_eq!(seqs(&ob), vec![1, 2, 3, 5, 6, 9, 10]);
    ob.close();
    drop(ob);
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("reopen");
    assert_eq!(ob.stats().corrupt, 3, "the quarantine is kept");
    assert_eq!(ob.stats().depth, 7);
}

#[test]
fn an_outbox_from_before_encryption_is_refused_then_encrypted_on_request() {
    let d = dir();
    let path = d.path().join("o.db");
    // The layout and encoding the outbox used before encryption.
    {
        let c = Connection::open(&path).expect("open");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(
            "CREATE TABLE outbox(seq INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
                                 received INTEGER NOT NULL, payload BLOB NOT NULL);
             CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('epoch', 1234), ('next_seq', 4);",
        )
        .expect("schema");
        for seq in 1..=3i64 {
            let mut r = marked(seq);
            r.set_received(Timestamp(1_700_000_000_000 + seq));
            let payload = postcard::to_stdvec(&r).expect("encode");
            c.execute(
                "INSERT INTO outbox VALUES (?1, 1, ?2, ?3)",
                params![seq, 1_700_000_000_000 + seq, payload],
            )
            .expect("insert");
        }
    }
    let err = Outbox::open(OutboxConfig::new(&path, key())).expect_err("refused");
    assert!(matches!(err, OutboxError::NotEncrypted { .. }), "{err}");
    assert!(err.to_string().contains("outbox-encrypt"), "{err}");
    assert!(contains(&raw_bytes(&path), b"MARKERPATIENT-42"));

    assert_eq!(Outbox::encrypt_existing(&path, &key()).expect("encrypt"), 3);
    assert!(!contains(&raw_bytes(&path), b"MARKERPATIENT-42"));
    assert!(matches!(
        Outbox::encrypt_existing(&path, &key()),
        Err(OutboxError::AlreadyEncrypted { .. })
    ));
    let ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open encrypted");
    assert_eq!(ob.epoch(), 1234, "the sequence space is kept");
    let got = ob.read_after(0, 10, usize::MAX).expect("read");
    assert_eq!(got.len(), 3);
    assert_eq!(
        Outbox::decode(&got[2].payload).expect("decode").received(),
        Some(Timestamp(1_700_000_000_003))
    );
    let r = ob.append_blocking(vec![weight(1)]).expect("append");
    assert_eq!(r.first_seq, 4);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        ConfirmSome(u8),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..20).prop_map(Op::Append),
            any::<u8>().prop_map(Op::ConfirmSome),
            Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the interleaving of appends, confirmations and restarts, the outbox holds
        /// exactly the acknowledged records above the confirmed cursor, in order.
        #[test]
        fn outbox_holds_exactly_the_unconfirmed_acknowledged_records(ops in proptest::collection::vec(op(), 1..30)) {
            let d = dir();
            let path = d.path().join("o.db");
            let mut ob = Outbox::open(OutboxConfig::new(&path, key())).expect("open");
            let mut model: Vec<u64> = Vec::new();
            let mut confirmed = 0u64;
            for op in ops {
                match op {
                    Op::Append(n) => {
                        let r = ob.append_blocking((0..i64::from(n)).map(hr).collect()).expect("append");
                        model.extend(r.first_seq..=r.last_seq);
                    }
                    Op::ConfirmSome(k) => {
                        if let Some(&s) = model.get(usize::from(k) % (model.len() + 1)) {
                            ob.confirm_blocking(s).expect("confirm");
                            confirmed = confirmed.max(s);
                            model.retain(|&x| x > s);
                        }
                    }
                    Op::Reopen => {
                        ob.close();
                        drop(ob);
                        ob = Outbox::open(OutboxConfig::new(&path, key())).expect("reopen");
                    }
                }
                prop_assert_eq!(seqs(&ob), model.clone());
                prop_assert_eq!(ob.confirmed(), confirmed);
                prop_assert_eq!(ob.stats().depth as usize, model.len());
            }
        }
    }
}
