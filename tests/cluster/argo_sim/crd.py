"""Objects checked against a CustomResourceDefinition's structural schema, as the Kubernetes API server and the
Argo controller's Go types decode them.

Two modes:

- :func:`admit` is what the API server does with a WorkflowTemplate at ``helm upgrade --install``: types and
  formats, ``x-kubernetes-int-or-string``, patterns (Go's RE2, through ``google-re2``), enums, bounds, required
  fields, list-map keys and sets, and the CRD's CEL rules (``x-kubernetes-validations``, through ``cel-python``).
  A field the schema does not know would be *pruned* (dropped without a word): that is reported too, since the
  object would then not do what it says. Nulls of non-nullable fields are pruned the same way.
- :func:`decode` is Go's ``json.Unmarshal`` into the typed structs (what the controller does with a template
  after substituting its variables, and with a ``podSpecPatch``): types, integer formats and resource quantities
  (``resource.Quantity`` parses its text) only; unknown fields, which Go ignores silently, are reported.

Every problem comes back as ``path: message``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import celpy
import re2
import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
WORKFLOW_TEMPLATE_CRD = SCHEMAS / "argo-helm-1.0.18-crd-workflowtemplates.full.yaml"  # what `make kind-up` installs
FORMATS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


@functools.cache
def load(path: Path = WORKFLOW_TEMPLATE_CRD) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of a CRD file's first (served) version (argo-helm 1.0.18's full WorkflowTemplate
    CRD, what ``make kind-up`` installs, by default)."""
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def template_schema() -> dict[str, Any]:
    """The schema of one Argo template (``spec.templates[]``)."""
    schema: dict[str, Any] = load()["properties"]["spec"]["properties"]["templates"]["items"]
    return schema


def pod_spec_schema() -> dict[str, Any]:
    """The part of a Kubernetes PodSpec a ``podSpecPatch`` may set, made of the CRD's own Kubernetes types."""
    template = template_schema()["properties"]
    string = {"type": "string"}
    fields = ["volumes", "nodeSelector", "tolerations", "affinity", "priorityClassName", "securityContext"]
    properties = {name: template[name] for name in fields}
    properties |= {"containers": {"type": "array", "items": template["container"]}}
    properties |= {"runtimeClassName": string, "schedulerName": string, "serviceAccountName": string}
    return {"type": "object", "properties": properties}


def admit(document: Any, schema: dict[str, Any]) -> list[str]:
    """What the API server would refuse in (or silently drop from) ``document``; empty when it is accepted."""
    problems: list[str] = []
    _Walk(admission=True, problems=problems).value(document, schema, "", root=True)
    return problems


def decode(document: Any, schema: dict[str, Any]) -> list[str]:
    """What Go's decoder into the typed structs would fail on (or ignore) in ``document``."""
    problems: list[str] = []
    _Walk(admission=False, problems=problems).value(document, schema, "", root=True)
    return problems


class _Walk:
    def __init__(self, *, admission: bool, problems: list[str]) -> None:
        self.admission, self.problems = admission, problems

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '.'}: {message}")

    def value(self, value: Any, schema: dict[str, Any], path: str, root: bool = False) -> None:
        if value is None:  # Go decodes null as the unset field
            if self.admission and not schema.get("nullable"):
                self.fail(path, "null (pruned by the API server)")
            return
        if schema.get("x-kubernetes-int-or-string"):
            if isinstance(value, bool) or not isinstance(value, int | str):
                self.fail(path, f"must be an integer or a string, not {type(value).__name__}")
            elif isinstance(value, str) and "pattern" in schema and not re2.search(schema["pattern"], value):
                self.fail(path, f"{value!r} should match {schema['pattern']!r}")
            return
        kind = schema.get("type")
        if kind is not None and not self._is(value, kind):
            self.fail(path, f"must be of type {kind}, not {type(value).__name__}")
            return
        if kind == "integer" and schema.get("format") in FORMATS:
            low, high = FORMATS[schema["format"]]
            if not low <= value <= high:
                self.fail(path, f"{value} is out of range for {schema['format']}")
        if self.admission:
            self._constraints(value, schema, path)
        if isinstance(value, dict):
            self._object(value, schema, path, root)
        elif isinstance(value, list):
            self._array(value, schema, path)

    @staticmethod
    def _is(value: Any, kind: str) -> bool:
        if isinstance(value, bool) and kind in ("integer", "number"):
            return False
        return isinstance(value, TYPES[kind])

    def _constraints(self, value: Any, schema: dict[str, Any], path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            self.fail(path, f"{value!r} is not one of {schema['enum']}")
        if isinstance(value, str):
            if "pattern" in schema and not re2.search(schema["pattern"], value):
                self.fail(path, f"{value!r} should match {schema['pattern']!r}")
            if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
                self.fail(path, f"length {len(value)} outside the allowed bounds")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
            self.fail(path, f"{value} outside [{schema.get('minimum')}, {schema.get('maximum')}]")
        if isinstance(value, list) and not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1 << 31):
            self.fail(path, f"{len(value)} items outside the allowed bounds")
        for option in schema.get("anyOf", []):
            if not option.get("type") or self._is(value, option["type"]):
                break
        else:
            if schema.get("anyOf"):
                self.fail(path, "matches none of anyOf")
        for rule in schema.get("x-kubernetes-validations", []):
            if "oldSelf" in rule["rule"]:
                continue  # transition rules apply to updates only
            if not _cel(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)}):
                self.fail(path, rule.get("message", rule["rule"]))

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: str, root: bool) -> None:
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        if self.admission:
            for name in schema.get("required", []):
                if name not in value:
                    self.fail(path, f"required field {name!r} is missing")
        for name, item in value.items():
            where = f"{path}.{name}"
            if root and name == "metadata":
                continue  # ObjectMeta: validated by the API server's own rules, not the CRD's schema
            if name in properties:
                self.value(item, properties[name], where)
            elif isinstance(extra, dict):
                self.value(item, extra, where)
            elif not (preserve or extra is True):
                self.fail(where, "unknown field (pruned by the API server)" if self.admission else "unknown field")

    def _array(self, value: list[Any], schema: dict[str, Any], path: str) -> None:
        items = schema.get("items", {})
        for index, item in enumerate(value):
            self.value(item, items, f"{path}[{index}]")
        if not self.admission:
            return
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            if len(seen) != len(set(seen)):
                self.fail(path, f"duplicate entries for the keys {keys}")
        elif list_type == "set" and len({repr(v) for v in value}) != len(value):
            self.fail(path, "duplicate entries in a set")


@functools.cache
def _cel(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))
