//! HL7 v2 over MLLP, over a real TCP socket.

use crate::{gateway, records, wait_until};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_devices::hl7::parse_oru;
use vigil_devices::mllp::frame;
use vigil_gateway::{Gateway, MllpConfig};
use vigil_model::{Record, Source};

fn vector() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/hl7/mindray-vs900-oru.hl7"
    );
    std::fs::read_to_string(path).expect("HL7 vector")
}

/// The vector with another control id (MSH-10 `1914`).
fn with_control_id(msg: &str, id: &str) -> String {
    msg.replacen(
        "||ORU^R01^ORU_R01|1914|",
        &format!("||ORU^R01^ORU_R01|{id}|"),
        1,
    )
}

fn mllp_cfg() -> MllpConfig {
    MllpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        unframed_idle_ms: 200,
        ..MllpConfig::default()
    }
}

async fn start(dir: &std::path::Path) -> (Gateway, TcpStream) {
    let gw = gateway(dir, Some(mllp_cfg()), None, |_| {}).await;
    let addr = gw.mllp_addr().expect("MLLP listener");
    let sock = TcpStream::connect(addr).await.expect("connect");
    (gw, sock)
}

/// Reads one MLLP-framed reply; panics after 5 s.
async fn read_ack(sock: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = sock.read(&mut b).await.expect("read");
            assert!(n == 1, "connection closed before the ACK ended: {out:?}");
            out.push(b[0]);
            if out.ends_with(&[0x1C, 0x0D]) {
                break;
            }
        }
    })
    .await
    .expect("an ACK within 5 s");
    assert_eq!(out.first(), Some(&0x0B), "ACK is MLLP-framed");
    String::from_utf8(out[1..out.len() - 2].to_vec()).expect("utf-8 ACK")
}

/// MSA segment fields: (code, control id).
fn msa(ack: &str) -> (String, String) {
    let seg = ack
        .split('\r')
        .find(|s| s.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA in {ack:?}"));
    let f: Vec<&str> = seg.split('|').collect();
    (f[1].to_owned(), f[2].to_owned())
}

fn readings(recs: &[Record]) -> Vec<&vigil_model::Reading> {
    recs.iter()
        .map(|r| match r {
            Record::Reading(r) => r,
            Record::Event(_) => panic!("HL7 gives readings only"),
        })
        .collect()
}

#[tokio::test]
async fn mllp_vector_is_acked_aa_only_after_the_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, mut sock) = start(dir.path()).await;
    let msg = vector();
    sock.write_all(&frame(&msg)).await.expect("write");
    let ack = read_ack(&mut sock).await;
    assert!(ack.starts_with("MSH|^~\\&|VIGIL|"), "{ack:?}");
    assert!(ack.contains("\rMSA|AA|1914|"), "{ack:?}");
    assert!(ack.contains("|ACK^R01^ACK|1914|"), "{ack:?}");

    // The ACK came after the commit: the readings are in the outbox now, without waiting.
    let recs = records(&gw).await;
    let expected = parse_oru(&msg).expect("vector parses");
    assert_eq!(recs.len(), expected.readings.len());
    assert_eq!(
        recs.len(),
        5,
        "SpO2, pulse, perfusion index, BP panel, temperature"
    );
    for (got, want) in readings(&recs).into_iter().zip(&expected.readings) {
        assert_eq!(
            got.device.as_str(),
            "00A0370098007A80",
            "device from MSH-3 EUI-64"
        );
        assert_eq!(got.device, want.device, "same device rule as parse_oru");
        assert_eq!(got.metric, want.metric);
        assert_eq!(got.value, want.value);
        assert_eq!(got.components, want.components);
        assert_eq!(got.time, want.time);
        assert_eq!(got.source, Source::Hl7);
        assert!(got.received.is_some(), "gateway receive time");
    }
    let codes: Vec<&str> = readings(&recs).iter().map(|r| r.metric.loinc()).collect();
    assert_eq!(codes, ["59408-5", "8867-4", "61006-3", "85354-9", "8310-5"]);
    let s = gw.adapters().mllp.expect("mllp status");
    assert_eq!((s.accepted_total, s.readings_total), (1, 5));
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_readings_carry_the_pid_patient() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, mut sock) = start(dir.path()).await;
    let msg = vector().replace("PID|||^^^Hospital^PI|", "PID|||PAT-1042^^^Hospital^PI|");
    sock.write_all(&frame(&msg)).await.expect("write");
    assert_eq!(msa(&read_ack(&mut sock).await).0, "AA");
    let recs = records(&gw).await;
    assert_eq!(recs.len(), 5);
    for r in readings(&recs) {
        assert_eq!(r.patient.as_ref().map(|p| p.as_str()), Some("PAT-1042"));
    }
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_garbage_is_rejected_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, mut sock) = start(dir.path()).await;
    sock.write_all(&frame("this is not HL7"))
        .await
        .expect("write");
    let ack = read_ack(&mut sock).await;
    assert_eq!(msa(&ack), ("AR".into(), String::new()), "{ack:?}");

    // A readable MSH of another type: rejected, with its control id.
    let adt = "MSH|^~\\&|ADT|H|||20240101||ADT^A01|adt-77|P|2.6\rPID|||P1\r";
    sock.write_all(&frame(adt)).await.expect("write");
    assert_eq!(
        msa(&read_ack(&mut sock).await),
        ("AR".into(), "adt-77".into())
    );
    // No control id: rejected.
    let no_id = with_control_id(&vector(), "");
    sock.write_all(&frame(no_id)).await.expect("write");
    assert_eq!(msa(&read_ack(&mut sock).await).0, "AR");
    // An ACK is never answered; the next message is.
    sock.write_all(&frame(
        "MSH|^~\\&|X|Y|||20240101||ACK^R01|a-1|P|2.6\rMSA|AA|1\r",
    ))
    .await
    .expect("write");
    sock.write_all(&frame(with_control_id(&vector(), "ok-1")))
        .await
        .expect("write");
    assert_eq!(
        msa(&read_ack(&mut sock).await),
        ("AA".into(), "ok-1".into())
    );
    assert_eq!(
        records(&gw).await.len(),
        5,
        "only the good message is stored"
    );
    let s = gw.adapters().mllp.expect("status");
    assert_eq!((s.accepted_total, s.rejected_total), (1, 3));
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_two_messages_in_one_write_and_one_message_in_many() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, mut sock) = start(dir.path()).await;
    let mut wire = frame(with_control_id(&vector(), "m-1"));
    wire.extend(frame(with_control_id(&vector(), "m-2")));
    sock.write_all(&wire).await.expect("write");
    assert_eq!(msa(&read_ack(&mut sock).await), ("AA".into(), "m-1".into()));
    assert_eq!(msa(&read_ack(&mut sock).await), ("AA".into(), "m-2".into()));

    let split = frame(with_control_id(&vector(), "m-3"));
    for part in split.chunks(97) {
        sock.write_all(part).await.expect("write");
        sock.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(msa(&read_ack(&mut sock).await), ("AA".into(), "m-3".into()));
    assert_eq!(records(&gw).await.len(), 15);
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_lf_only_message_is_accepted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, mut sock) = start(dir.path()).await;
    let lf = vector().replace('\r', "\n");
    assert!(!lf.contains('\r'));
    sock.write_all(&frame(&lf)).await.expect("write");
    assert_eq!(
        msa(&read_ack(&mut sock).await),
        ("AA".into(), "1914".into())
    );
    assert_eq!(records(&gw).await.len(), 5);
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_unframed_input_is_accepted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, mut sock) = start(dir.path()).await;
    // Ended by a blank line.
    let a = format!("{}\r\n\r\n", with_control_id(&vector(), "u-1").trim_end());
    sock.write_all(a.as_bytes()).await.expect("write");
    assert_eq!(msa(&read_ack(&mut sock).await), ("AA".into(), "u-1".into()));
    // Ended by a pause (unframed_idle_ms).
    sock.write_all(with_control_id(&vector(), "u-2").as_bytes())
        .await
        .expect("write");
    assert_eq!(msa(&read_ack(&mut sock).await), ("AA".into(), "u-2".into()));
    // Ended by the end of the sender's stream: still answered.
    sock.write_all(with_control_id(&vector(), "u-3").as_bytes())
        .await
        .expect("write");
    sock.shutdown().await.expect("half-close");
    assert_eq!(msa(&read_ack(&mut sock).await), ("AA".into(), "u-3".into()));
    assert_eq!(records(&gw).await.len(), 15);
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_outbox_refusal_is_an_application_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let gw = gateway(dir.path(), Some(mllp_cfg()), None, |c| {
        c.outbox_max_bytes = 64
    })
    .await;
    let mut sock = TcpStream::connect(gw.mllp_addr().expect("addr"))
        .await
        .expect("connect");
    sock.write_all(&frame(vector())).await.expect("write");
    let ack = read_ack(&mut sock).await;
    assert_eq!(msa(&ack), ("AE".into(), "1914".into()), "{ack:?}");
    assert!(ack.contains("outbox full"), "{ack:?}");
    assert!(records(&gw).await.is_empty(), "nothing stored, so no AA");
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn mllp_counters_are_on_the_health_endpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let gw = gateway(dir.path(), Some(mllp_cfg()), None, |c| {
        c.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)))
    })
    .await;
    let mut sock = TcpStream::connect(gw.mllp_addr().expect("addr"))
        .await
        .expect("connect");
    sock.write_all(&frame(vector())).await.expect("write");
    assert_eq!(msa(&read_ack(&mut sock).await).0, "AA");
    let url = format!("http://{}/health", gw.local_addr().expect("http"));
    let ok = wait_until(Duration::from_secs(5), async || {
        let Ok(r) = reqwest::get(&url).await else {
            return false;
        };
        let j: serde_json::Value = r.json().await.unwrap_or_default();
        let m = &j["adapters"]["mllp"];
        m["accepted_total"] == 1 && m["readings_total"] == 5 && m["connections_active"] == 1
    })
    .await;
    assert!(ok, "health shows the MLLP counters");
    gw.shutdown(Duration::ZERO).await;
}
