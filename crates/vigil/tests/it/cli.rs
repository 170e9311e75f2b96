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
