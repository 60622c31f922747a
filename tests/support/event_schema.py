"""Events checked against records.yaml's Event schema (a small JSON Schema check: type, const, enum, required,
properties, additionalProperties, oneOf by type)."""

from __future__ import annotations

from typing import Any

import yaml

from support.paths import REPO

SPEC = yaml.safe_load((REPO / "records.yaml").read_text())


def resolve(schema: dict) -> dict:
    return resolve(SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]) if "$ref" in schema else schema


def check(value: Any, schema: dict, where: str = "event") -> None:
    """A small JSON Schema check (type, const, enum, required, properties, additionalProperties, oneOf by type)."""
    schema = resolve(schema)
    if "oneOf" in schema:
        matching = [s for s in map(resolve, schema["oneOf"]) if s["properties"]["type"]["const"] == value["type"]]
        assert len(matching) == 1, f"{where}: no single schema for {value['type']}"
        return check(value, matching[0], where)
    types = schema.get("type")
    kinds = {"object": dict, "string": str, "integer": int, "array": list, "boolean": bool, "null": type(None)}
    kind = tuple(kinds[t] for t in types) if isinstance(types, list) else kinds.get(types, object)
    assert isinstance(value, kind), f"{where}: {value!r} is not {schema.get('type')}"
    assert schema.get("const", value) == value, f"{where}: {value!r} != {schema['const']!r}"
    assert value in schema.get("enum", [value]), f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        assert set(schema.get("required", [])) <= value.keys(), f"{where}: missing {schema['required']}"
        if schema.get("additionalProperties") is False:
            assert value.keys() <= schema["properties"].keys(), f"{where}: extra keys in {sorted(value)}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                check(value[key], sub, f"{where}.{key}")


def conforms(event: dict) -> dict:
    check(event, SPEC["components"]["schemas"]["Event"])
    return event
