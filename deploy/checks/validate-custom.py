"""Validates the custom resources among the given manifests against the vendored, strict JSON
schemas in deploy/checks/schemas/ (made by crd-to-schema.py from the Prometheus Operator's
CRDs): the kinds kubernetes-validate has no schema for. Every document must be either a
built-in kind (left to kubernetes-validate) or one of these, or the Kustomization (which
tests/it/deploy.rs checks); anything else fails, so a new custom kind cannot slip through
unvalidated.

    python validate-custom.py K8S_VERSION FILE...   exit 1 on any error, naming file, object, path"""
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).parent
# Kinds that are not Kubernetes API objects and are checked elsewhere.
NOT_API_OBJECTS = {("kustomize.config.k8s.io/v1beta1", "Kustomization")}

schemas = {}
for path in sorted((HERE / "schemas").glob("*.json")):
    schema = json.loads(path.read_text())
    key = (schema["properties"]["apiVersion"]["enum"][0], schema["properties"]["kind"]["enum"][0])
    schemas[key] = (path.name, jsonschema.Draft7Validator(schema))

errors = 0
k8s_version = sys.argv[1]
for name in sys.argv[2:]:
    with open(name) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        what = f"{name}: {key[1]}/{doc.get('metadata', {}).get('name', '-')}"
        if key in NOT_API_OBJECTS:
            print(f"SKIP {what}: not an API object (tests/it/deploy.rs checks it)")
            continue
        if key not in schemas:
            try:  # a built-in kind: kubernetes-validate checks it; only make sure it has a schema
                kubernetes_validate.validate(doc, k8s_version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                print(f"FAIL {what}: neither Kubernetes {k8s_version} nor deploy/checks/schemas/ has a schema for it")
                errors += 1
            except kubernetes_validate.ValidationError:
                pass  # reported by kubernetes-validate itself
            continue
        schema_file, validator = schemas[key]
        found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in found:
            path = ".".join(str(p) for p in e.absolute_path) or "(root)"
            print(f"FAIL {what} at {path}: {e.message}")
        errors += len(found)
        if not found:
            print(f"OK   {what} against {schema_file}")
sys.exit(1 if errors else 0)
