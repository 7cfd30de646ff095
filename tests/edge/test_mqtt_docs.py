"""docs/mqtt.md and docs/mqtt-v1.schema.json agree with turnout.contract, and every example is valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from turnout import contract

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_FILE = DOCS / "mqtt-v1.schema.json"
MODELS: dict[str, type] = {
    "occupancy": contract.Occupancy,
    "status": contract.Status,
    "alert": contract.Alert,
    "snapshot_request": contract.SnapshotRequest,
    "snapshot": contract.Snapshot,
    "layout": contract.Layout,
    "layout_result": contract.LayoutResult,
}
_BLOCK = re.compile(r"(?:<!-- example: (?P<name>\w+) -->\s*)?```json\n(?P<body>.*?)```", re.S)


def examples() -> list[tuple[str | None, str]]:
    return [(m["name"], m["body"]) for m in _BLOCK.finditer((DOCS / "mqtt.md").read_text())]


def validator(schema: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """Validate against `$defs/{name}` referenced through the document root, as a third party would."""
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return jsonschema.Draft202012Validator(
        {"$ref": f"{schema['$id']}#/$defs/{name}"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_schema_file_is_generated_from_the_contract() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == contract.json_schema(), (
        "docs/mqtt-v1.schema.json is stale: run `python -m turnout.contract > docs/mqtt-v1.schema.json`"
    )
    jsonschema.Draft202012Validator.check_schema(contract.json_schema())


def test_every_payload_is_documented_with_an_example() -> None:
    named = [name for name, _ in examples()]
    assert None not in named, "every ```json block in docs/mqtt.md needs an <!-- example: NAME --> marker"
    assert set(named) == set(MODELS), "each payload needs at least one example in docs/mqtt.md"
    messages = {name for name in contract.json_schema()["$defs"] if name.islower()}
    assert messages == set(MODELS), "a payload was added to or removed from the contract: update this page"


@pytest.mark.parametrize(("name", "body"), examples())
def test_example_validates_against_schema_and_models(name: str, body: str) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    errors = [e.message for e in validator(schema, name).iter_errors(json.loads(body))]
    assert errors == []
    contract.decode(MODELS[name], body.encode())


def test_schema_rejects_what_the_contract_rejects() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    body = json.loads(next(b for n, b in examples() if n == "occupancy"))
    check = validator(schema, "occupancy")
    assert check.is_valid(body)
    for broken in (
        {**body, "extra": 1},
        {**body, "seq": -1},
        {**body, "camera": "bad camera"},
        {**body, "sections": [{"id": "a", "seats": 3, "occupied": "x", "people": 0}]},
        {k: v for k, v in body.items() if k != "seq"},
    ):
        assert not check.is_valid(broken), broken
        with pytest.raises(contract.PayloadError):
            contract.decode(contract.Occupancy, json.dumps(broken).encode())
