#!/usr/bin/env python3
"""Reads a Vigil hub through its FHIR R4 API with a FHIR client library Vigil did not write
(fhirpy, SyncFHIRClient): every patient (following the server's paging links), the latest
value of each of their vital signs through Observation/$lastn, and their latest heart rate
through a sorted search.

Usage: fhirpy_client.py FHIR_BASE_URL TOKEN
Prints one JSON object per line; exit 2 when fhirpy is missing.
"""

import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: fhirpy_client.py FHIR_BASE_URL TOKEN", file=sys.stderr)
        return 2
    try:
        from fhirpy import SyncFHIRClient
    except ImportError as e:
        print(f"fhirpy is not installed ({e}); run `pip install -r crates/vigil-fhir/requirements.txt`",
              file=sys.stderr)
        return 2
    client = SyncFHIRClient(sys.argv[1], authorization=f"Bearer {sys.argv[2]}")
    # Two per page, so that fetch_all follows the server's next links.
    patients = client.resources("Patient").limit(2).fetch_all()
    for p in patients:
        vigil_id = next(i["value"] for i in p["identifier"] if i["system"] == "urn:vigil:patient-id")
        bundle = client.execute("Observation/$lastn", method="get", params={"patient": p["id"]})
        for e in bundle.get("entry", []):
            o = e["resource"]
            print(json.dumps({
                "kind": "lastn",
                "patient": vigil_id,
                "code": o["code"]["coding"][0]["code"],
                "time": o["effectiveDateTime"],
                "value": o.get("valueQuantity", {}).get("value"),
            }))
        latest_hr = (client.resources("Observation")
                     .search(patient=p["id"], code="http://loinc.org|8867-4")
                     .sort("-date")
                     .limit(1)
                     .fetch())
        for o in latest_hr:
            print(json.dumps({
                "kind": "search",
                "patient": vigil_id,
                "code": "8867-4",
                "time": o["effectiveDateTime"],
                "value": o["valueQuantity"]["value"],
            }))
    print(json.dumps({"kind": "patients", "count": len(patients)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
