#!/usr/bin/env python3
"""Builds kubeconform's JSON schemas offline.

kubeconform downloads its schemas from GitHub, which CI cannot reach. The same schemas are
derived here from sources the Go module proxy serves:
  - Kubernetes' OpenAPI v2 document (api/openapi-spec/swagger.json in the k8s.io/kubernetes
    module): one standalone schema per group/version/kind, the way openapi2jsonschema
    --expanded --kubernetes --stand-alone --strict builds kubeconform's default set;
  - CustomResourceDefinitions (prometheus-operator's ServiceMonitor and PrometheusRule) as JSON
    arrays of documents (`opscheck yaml2json CRD.yaml`): their openAPIV3Schema.

Files are named <kind>-<group's first label>-<version>.json, lowercase, matching kubeconform's
`-schema-location DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json`. Strict: objects with declared
properties get additionalProperties false, so a misspelled field fails validation.

usage: k8s-schemas.py OUT_DIR SWAGGER_JSON [CRD_JSON...]
"""
import copy
import json
import os
import sys

STRICT = True


def kind_suffix(group, version):
    return f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"


def fix(node, preserve=False):
    """Rewrites OpenAPI idioms into JSON Schema: int-or-string, quantities, strictness."""
    if isinstance(node, list):
        return [fix(n, preserve) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties", "definitions"):
            out[k] = {pk: fix(pv) for pk, pv in v.items()}
        else:
            out[k] = fix(v) if isinstance(v, (dict, list)) else v
    if out.get("format") == "int-or-string" or out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.pop("format", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    keep_open = out.get("x-kubernetes-preserve-unknown-fields") or preserve
    if STRICT and "properties" in out and "additionalProperties" not in out and not keep_open:
        out["additionalProperties"] = False
    return out


def reachable(defs, root):
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/definitions/"):
                name = ref[len("#/definitions/"):]
                if name not in seen:
                    seen.add(name)
                    todo.append(defs[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return seen


def from_swagger(path, out_dir):
    with open(path) as f:
        defs = json.load(f)["definitions"]
    q = "io.k8s.apimachinery.pkg.api.resource.Quantity"
    if q in defs:
        defs[q] = {"oneOf": [{"type": "string"}, {"type": "number"}], "description": defs[q].get("description", "")}
    n = 0
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            if not d.get("properties", {}).get("kind"):
                continue
            schema = copy.deepcopy(d)
            gv = f"{group}/{version}" if group else version
            schema["properties"]["apiVersion"] = {"type": "string", "enum": [gv]}
            schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
            schema["definitions"] = {r: defs[r] for r in reachable(defs, d)}
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            write(out_dir, kind, group, version, fix(schema))
            n += 1
    return n


def from_crd(path, out_dir):
    n = 0
    with open(path) as f:
        for doc in json.load(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
                gv = f"{spec['group']}/{v['name']}"
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [gv]}
                props["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
                # CRD schemas leave metadata open; keep it so.
                props["metadata"] = {"type": "object"}
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                write(out_dir, spec["names"]["kind"], spec["group"], v["name"], fix(schema))
                n += 1
    return n


def write(out_dir, kind, group, version, schema):
    name = f"{kind.lower()}{kind_suffix(group, version)}.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(schema, f, separators=(",", ":"))


def main():
    out_dir, swagger, crds = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(out_dir, exist_ok=True)
    n = from_swagger(swagger, out_dir)
    for c in crds:
        n += from_crd(c, out_dir)
    print(f"k8s-schemas: {n} schemas in {out_dir}")


if __name__ == "__main__":
    main()
