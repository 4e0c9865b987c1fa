"""Validate a FHIR R4 Bundle read on stdin with fhir.resources 6.4 (FHIR 4.0.1 models, pydantic 1).

Runs in build/fhir-r4's own venv (see requirements.in), not the product's. Prints the resource types found
(`{"Bundle": 1, "ChargeItem": 3}`) and exits 0, or prints the validation errors and exits 1.
"""

import collections
import json
import sys

import fhir.resources
from fhir.resources import construct_fhir_element
from pydantic import ValidationError

assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__

document = json.load(sys.stdin)
counts = collections.Counter()
try:
    bundle = construct_fhir_element("Bundle", document)
    counts["Bundle"] += 1
    for entry in document.get("entry", []):
        # Each entry again as its own type, so that nothing is only checked as a generic Resource.
        resource = entry["resource"]
        construct_fhir_element(resource["resourceType"], resource)
        counts[resource["resourceType"]] += 1
except ValidationError as exc:
    print(exc)
    sys.exit(1)
print(json.dumps(counts))
