"""Writes kubeconform's JSON schemas from a live API server's OpenAPI document, offline.

kubeconform's default schemas are downloaded from GitHub; here they come from the real kube-apiserver of the
local stack (Kubernetes 1.35, our CRDs included once installed): `kubectl get --raw /openapi/v2 | python3
hack/k8s_json_schemas.py OUT_DIR`. Each kind becomes OUT_DIR/<kind>-<group>-<version>.json with every $ref
inlined ("standalone") and unknown fields refused where the API declares the fields ("strict")."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def inline(node: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [inline(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        name = node["$ref"].split("/")[-1]
        if name in seen:  # recursive types (JSONSchemaProps): accept anything below the cycle
            return {}
        return inline(definitions[name], definitions, (*seen, name))
    out = {key: inline(value, definitions, seen) for key, value in node.items() if not key.startswith("x-")}
    if node.get("format") == "int-or-string":
        out.pop("type", None)
        out.pop("format", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    document = json.load(sys.stdin)
    definitions = document["definitions"]
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group = gvk["group"].split(".")[0]
            suffix = f"-{group}-{gvk['version']}" if group else f"-{gvk['version']}"
            schema = inline(definition, definitions, (name,))
            props = schema.setdefault("properties", {})
            # apiVersion and kind are checked by kubeconform itself; the API allows the status subresource.
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            (out / f"{gvk['kind'].lower()}{suffix}.json").write_text(json.dumps(schema))
            written += 1
    print(f"{written} schemas in {out}", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
