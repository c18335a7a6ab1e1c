#!/usr/bin/env python3
"""Helpers for tests/tests/packaging.rs: the parts of the packaging checks that use Python
packages from PyPI (a YAML parser, the Compose specification schema, Istio's CRD models).

  packaging.py bootstrap VENV        create VENV (if needed) with REQUIREMENTS installed; prints
                                     VENV's python
  packaging.py yaml2json FILE        every YAML document in FILE as one JSON array
  packaging.py compose FILE          validate FILE against the Compose specification schema
  packaging.py wasmplugin FILE       validate every WasmPlugin in FILE against Istio's CRD model

`compose` and `wasmplugin` print one JSON object per line ({"doc": ..., "errors": [...]}) and
exit 0 either way; the Rust test decides. Run everything but `bootstrap` with VENV's python.

Where the schemas come from (registry packages, pinned below):
- Compose: check-jsonschema vendors the Compose specification's compose-spec.json (the schema
  `docker compose config` validates against) as its builtin schema `vendor.compose-spec`.
- Istio WasmPlugin: cloudcoil-models-istio is generated from the openAPIV3Schema of Istio's CRDs
  (pydantic models: enums, patterns, lengths, required fields). The model ignores unknown fields,
  as the API server prunes them; we also reject them, as `kubectl apply --validate=strict` does.
"""
import json
import os
import subprocess
import sys
import venv

REQUIREMENTS = [
    "check-jsonschema==0.39.0",
    "cloudcoil-models-istio==1.24.2.1",
    "PyYAML>=6",
]


def bootstrap(path):
    stamp = os.path.join(path, ".grpc-bridge-packaging")
    want = "\n".join(REQUIREMENTS) + "\n"
    python = os.path.join(path, "bin", "python")
    try:
        with open(stamp) as f:
            if f.read() == want and os.path.exists(python):
                print(python)
                return 0
    except FileNotFoundError:
        pass
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
                   + REQUIREMENTS, check=True, stdout=sys.stderr)
    with open(stamp, "w") as f:
        f.write(want)
    print(python)
    return 0


def load_all(path):
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml2json(path):
    print(json.dumps(load_all(path)))
    return 0


def compose(path):
    """Validate with check-jsonschema's own CLI and its vendored compose-spec.json."""
    res = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         "--output-format", "text", path],
        capture_output=True, text=True)
    errors = [] if res.returncode == 0 else [(res.stdout + res.stderr).strip()]
    print(json.dumps({"doc": path, "schema": "check-jsonschema vendor.compose-spec",
                      "errors": errors}))
    return 0


def unknown_fields(model_cls, data, where):
    """Keys of `data` that `model_cls` (a pydantic model) has no field for, recursively."""
    import typing
    import pydantic

    out = []
    if not isinstance(data, dict):
        return out
    by_alias = {}
    for name, field in model_cls.model_fields.items():
        by_alias[field.alias or name] = field
    for key, value in data.items():
        field = by_alias.get(key)
        if field is None:
            out.append(f"{where}.{key}: unknown field")
            continue
        for sub in nested_models(field.annotation):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    out += unknown_fields(sub, item, f"{where}.{key}[{i}]")
            else:
                out += unknown_fields(sub, value, f"{where}.{key}")
    return out


def nested_models(annotation):
    """The pydantic model classes inside a field's type (Optional[List[Model]] -> [Model])."""
    import typing
    import pydantic

    found = []
    stack = [annotation]
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, pydantic.BaseModel):
            found.append(t)
            continue
        stack.extend(typing.get_args(t))
    return found


def wasmplugin(path):
    import pydantic
    from cloudcoil.models.istio.extensions.v1alpha1 import WasmPlugin

    for doc in load_all(path):
        if not isinstance(doc, dict) or doc.get("kind") != "WasmPlugin":
            continue
        errors = []
        if doc.get("apiVersion") != "extensions.istio.io/v1alpha1":
            errors.append(f"apiVersion {doc.get('apiVersion')!r} is not extensions.istio.io/v1alpha1")
        try:
            WasmPlugin.model_validate(doc)
        except pydantic.ValidationError as e:
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"])
                errors.append(f"{loc}: {err['msg']}")
        errors += unknown_fields(WasmPlugin, doc, "")
        name = (doc.get("metadata") or {}).get("name")
        print(json.dumps({"doc": name, "schema": "cloudcoil-models-istio 1.24.2.1 WasmPlugin",
                          "errors": errors}))
    return 0


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    cmd, arg = argv
    if cmd == "bootstrap":
        return bootstrap(arg)
    if cmd == "yaml2json":
        return yaml2json(arg)
    if cmd == "compose":
        return compose(arg)
    if cmd == "wasmplugin":
        return wasmplugin(arg)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
