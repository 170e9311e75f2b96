#!/usr/bin/env python3
"""Validates every *.json FHIR resource in a directory with an implementation Vigil did not
write: the PyPI package fhir.resources (pydantic models generated from the FHIR R4B
StructureDefinitions: element names, cardinalities, primitive formats, required elements,
choice types, nested resources in bundles and `contained`).

fhir.resources checks neither profiles nor invariants, so Observations that claim the R4
vital-signs profile are also checked here against its rules (clinical-codes-and-rules.md 3.1):
these few checks are Vigil's own and come second to the package's validation.

Usage: validate.py DIR      exit 0 when all are valid, 1 when any is not, 2 on setup errors.
"""

import json
import pathlib
import sys

INSTALL = "run `pip install -r crates/vigil-fhir/requirements.txt`"


VS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def has(cc, system, code=None):
    return any(
        c.get("system") == system and (code is None or c.get("code") == code)
        for c in (cc or {}).get("coding", [])
    )


def observations(res):
    """Every Observation in a resource: itself, contained ones, bundle entries."""
    if res.get("resourceType") == "Observation":
        yield res
    for c in res.get("contained", []):
        yield from observations(c)
    for e in res.get("entry", []):
        if "resource" in e:
            yield from observations(e["resource"])


def profile_problems(res):
    out = []
    for o in observations(res):
        where = f"Observation/{o.get('id')}"
        if "valueQuantity" in o and "dataAbsentReason" in o:
            out.append(f"{where}: obs-6 dataAbsentReason with a value")
        profiles = o.get("meta", {}).get("profile", [])
        if VS_PROFILE not in profiles:
            continue
        if not any(has(c, CATEGORY, "vital-signs") for c in o.get("category", [])):
            out.append(f"{where}: no vital-signs category")
        if not has(o.get("code"), LOINC):
            out.append(f"{where}: no LOINC coding")
        if "subject" not in o or not ("effectiveDateTime" in o or "effectivePeriod" in o):
            out.append(f"{where}: subject and effective[x] are required")
        if not (o.get("component") or o.get("hasMember") or "dataAbsentReason" in o
                or any(k.startswith("value") for k in o)):
            out.append(f"{where}: vs-2 no value, component, hasMember or dataAbsentReason")
        quantities = [o.get("valueQuantity")] + [c.get("valueQuantity") for c in o.get("component", [])]
        for q in filter(None, quantities):
            if q.get("system") != UCUM or not q.get("code"):
                out.append(f"{where}: quantity without a UCUM code")
        for c in o.get("component", []):
            if "valueQuantity" not in c and "dataAbsentReason" not in c:
                out.append(f"{where}: vs-3 component without value or dataAbsentReason")
        if BP_PROFILE in profiles:
            if not has(o.get("code"), LOINC, "85354-9"):
                out.append(f"{where}: BP profile without code 85354-9")
            for loinc in ("8480-6", "8462-4"):
                n = sum(has(c.get("code"), LOINC, loinc) for c in o.get("component", []))
                if n != 1:
                    out.append(f"{where}: BP profile needs exactly one {loinc} component, has {n}")
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: validate.py DIR", file=sys.stderr)
        return 2
    try:
        from fhir.resources.R4B import construct_fhir_element
    except ImportError as e:
        print(f"fhir.resources with R4B models is not installed ({e}); {INSTALL}", file=sys.stderr)
        return 2
    files = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
    if not files:
        print(f"no *.json files in {sys.argv[1]}", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            construct_fhir_element(data["resourceType"], data)
            problems = profile_problems(data)
            if problems:
                raise ValueError("; ".join(problems))
        except Exception as e:  # noqa: BLE001 - report whatever the validator raises
            failed += 1
            print(f"INVALID {f.name}: {e}", file=sys.stderr)
        else:
            print(f"ok {f.name} ({data['resourceType']})")
    if failed:
        print(f"{failed} of {len(files)} resources are invalid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
