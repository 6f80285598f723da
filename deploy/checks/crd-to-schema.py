"""Turns a CustomResourceDefinition into the JSON schema deploy/check.sh validates its custom
resources with: the openAPIV3Schema of one served version, made strict as kubernetes-validate's
--strict makes the built-in ones (an object that lists its properties refuses any other, unless
it says x-kubernetes-preserve-unknown-fields), and apiVersion/kind fixed to the CRD's.

    python crd-to-schema.py CRD.yaml VERSION > schemas/<kind>-<group>-<version>.json

Run by hand when the vendored schemas are bumped (deploy/CHECKS.md says from where)."""
import json
import sys

import yaml


def strict(node):
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


crd_path, version = sys.argv[1], sys.argv[2]
with open(crd_path) as f:
    crd = yaml.safe_load(f)
spec = crd["spec"]
served = [v for v in spec["versions"] if v["name"] == version]
if not served:
    sys.exit(f"{crd_path}: no version {version}")
schema = strict(served[0]["schema"]["openAPIV3Schema"])
api_version = f"{spec['group']}/{version}"
schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
schema["properties"]["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "spec"})
schema["$comment"] = (
    f"{spec['names']['kind']} {api_version} from {crd_path.split('/')[-1]} "
    f"(operator version {crd['metadata'].get('annotations', {}).get('operator.prometheus.io/version', '?')}),"
    " made strict by deploy/checks/crd-to-schema.py"
)
json.dump(schema, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
