//! The command line: exit codes and one-line errors.

use crate::harness::vigil;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = vigil().args(args).output().expect("run vigil");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_arguments_exit_2_with_one_line_on_stderr() {
    for args in [
        &["hub", "--listen", "nowhere"][..],
        &["no-such-command"][..],
        &["news2", "--rr", "15"][..],
        &["news2", "--rr", "x"][..],
        &["decode", "--format", "ble:2A37", "zz"][..],
        &["decode", "--format", "ble:FFFF", "00"][..],
        &[
            "admin",
            "create-token",
            "--name",
            "x",
            "--role",
            "superuser",
        ][..],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?} printed: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn news2_cli_prints_total_per_parameter_scores_and_risk() {
    let (code, out, err) = run(&[
        "news2", "--rr", "15", "--spo2", "97", "--scale", "1", "--air", "--sbp", "120", "--pulse",
        "70", "--acvpu", "A", "--temp", "37.0",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["total"].as_u64(), v["risk"].as_str()),
        (Some(0), Some("low"))
    );
    // RCP 2017: RR 25 (3) + SpO2 91 on scale 1 (3) + oxygen (2) + SBP 90 (3) + pulse 131 (3)
    // + new confusion (3) + 39.1 Cel (2) = 19, high.
    let (code, out, _) = run(&[
        "news2", "--rr", "25", "--spo2", "91", "--oxygen", "--sbp", "90", "--pulse", "131",
        "--acvpu", "C", "--temp", "39.1",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["total"].as_u64(), v["risk"].as_str()),
        (Some(19), Some("high"))
    );
}

#[test]
fn help_and_version_exit_0() {
    assert_eq!(run(&["--help"]).0, 0);
    assert_eq!(run(&["--version"]).0, 0);
}

#[test]
fn decode_prints_canonical_readings_for_ble_hl7_and_templates() {
    let (code, out, err) = run(&["decode", "--format", "ble:2A37", "1E5532002100"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["loinc"], "8867-4");
    assert_eq!(v[0]["value"], 85.0);
    assert_eq!(v[0]["unit"], "/min");
    assert_eq!(v[0]["fields"]["energy_expended_kj"], 50);

    let hl7 = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/hl7/mindray-vs900-oru.hl7"
    );
    let (code, out, err) = run(&["decode", "--format", "hl7", hl7]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let spo2 = v
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["loinc"] == "59408-5")
        .expect("SpO2 reading");
    assert_eq!(spo2["value"], 99.0);

    // A special SFLOAT value (NaN) is a data-absent reason, never a number.
    // FLOAT NaN is 0x007FFFFF, little-endian on the wire.
    let (code, out, err) = run(&["decode", "--format", "ble:2A1C", "00FFFF7F00"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(v[0].get("value").is_none(), "{v}");
    assert_eq!(v[0]["data_absent_reason"], "not-a-number");

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../vigil-devices/templates");
    let template = format!("template:{dir}/fitbit/devicecontent.json");
    let payload = std::fs::read_dir(format!("{dir}/examples"))
        .expect("examples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("fitbit"))
        .expect("a fitbit example payload");
    let (code, out, err) = run(&[
        "decode",
        "--format",
        &template,
        payload.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        v.as_array()
            .is_some_and(|a| a.iter().any(|r| r["loinc"] == "8867-4")),
        "{v}"
    );
}
