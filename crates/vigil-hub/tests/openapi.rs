//! The OpenAPI description lists every route and method of the hub's JSON API, and nothing
//! the hub does not serve: the route table in the sources is compared with the document.

use std::collections::BTreeSet;
use std::path::Path;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (path, method) pairs registered with `.route("...", ...)` outside the FHIR router.
fn routes_in_sources() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .expect("hub sources are readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source file is readable");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            let after = &rest[open + 1..];
            let Some(close) = after.find('"') else { break };
            let path = &after[..close];
            let body = &after[close + 1..];
            let end = [".route(", ".merge(", ".nest(", ".fallback(", "\n}"]
                .iter()
                .filter_map(|m| body.find(m))
                .min()
                .unwrap_or(body.len());
            // Routes of the FHIR router are relative (mounted under /fhir/r4) and described
            // by its CapabilityStatement instead.
            if !path.starts_with("/api/")
                && !path.starts_with("/oauth2/")
                && path != "/health"
                && path != "/metrics"
            {
                continue;
            }
            for m in METHODS {
                let call = format!("{m}(");
                let seg = &body[..end];
                let found = seg.match_indices(&call).any(|(i, _)| {
                    i == 0
                        || !seg.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && seg.as_bytes()[i - 1] != b'_'
                });
                if found {
                    out.insert((path.to_string(), m.to_string()));
                }
            }
        }
    }
    out
}

/// (path, method) pairs of the OpenAPI document (two-space indented paths, four-space
/// indented methods).
fn routes_in_spec() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in vigil_hub::OPENAPI_YAML.lines() {
        if !line.starts_with(' ') {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            current = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let (Some(p), Some(m)) = (&current, line.strip_prefix("    ")) {
            let m = m.trim_end().trim_end_matches(':');
            if METHODS.contains(&m) {
                out.insert((p.clone(), m.to_string()));
            }
        }
    }
    out
}

#[test]
fn openapi_describes_every_route_and_nothing_else() {
    let code = routes_in_sources();
    let spec = routes_in_spec();
    assert!(
        code.len() > 20,
        "found too few routes in the sources: {code:?}"
    );
    let undocumented: Vec<_> = code.difference(&spec).collect();
    let phantom: Vec<_> = spec.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from crates/vigil-hub/openapi.yaml: {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "openapi.yaml describes routes the hub does not serve: {phantom:?}"
    );
}
