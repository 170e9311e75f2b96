//! Every kind of resource vigil-fhir emits, validated by an implementation Vigil did not write
//! (`tests/validate.py`, the PyPI package `fhir.resources`, R4B models). Fails, never skips,
//! when python3 or the package is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "run `pip install -r crates/vigil-fhir/requirements.txt`";

#[test]
fn every_resource_kind_is_valid_fhir_by_fhir_resources() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // VIGIL_FHIR_EXAMPLES_DIR keeps the examples for inspection.
    let dir: PathBuf = match std::env::var_os("VIGIL_FHIR_EXAMPLES_DIR") {
        Some(keep) => {
            std::fs::create_dir_all(&keep).expect("examples dir");
            keep.into()
        }
        None => tmp.path().to_owned(),
    };
    let examples = crate::examples::all();
    let kinds: std::collections::BTreeSet<&str> =
        examples.iter().map(|(_, r)| r.resource_type()).collect();
    assert_eq!(
        kinds.len(),
        10,
        "an example of every resource kind: {kinds:?}"
    );
    for (name, r) in &examples {
        let json = r.to_json().expect("serialize");
        std::fs::write(dir.join(format!("{name}.json")), json).expect("write");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate.py");
    // scripts/test prepares a virtual environment with the validator and names it here.
    let python = std::env::var("VIGIL_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = match Command::new(&python).arg(&script).arg(&dir).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then {INSTALL}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            assert_eq!(
                stdout.lines().filter(|l| l.starts_with("ok ")).count(),
                examples.len(),
                "{stdout}"
            );
        }
        Some(2) => panic!("the FHIR validator is not set up: {stderr}\n{INSTALL}"),
        _ => panic!("fhir.resources rejected resources emitted by vigil-fhir:\n{stderr}\n{stdout}"),
    }
}
