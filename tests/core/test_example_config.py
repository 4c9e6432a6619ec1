"""config/syncd.example.yaml shows the code's defaults: every key it sets is compared with the settings models.

A value that is not the default (an example group, a DN to edit) says so on its line with `not the default` in its
comment; the same words on the first line of a list entry (an example mapping) mark every value of that entry. A
value taken from the environment without a fallback (`${LITELLM_MASTER_KEY}`) is the operator's, not compared.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr

from syncd.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "syncd.example.yaml"
MARK = "not the default"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return value.model_dump()
    return value


def _marked(lines: list[str], node: yaml.Node) -> bool:
    return MARK in lines[node.start_mark.line].partition("#")[2]


def _walk(
    node: yaml.MappingNode,
    model: BaseModel,
    path: str,
    lines: list[str],
    found: dict[str, list[str]],
    example: bool = False,
) -> None:
    """Compare every key of `node` with `model`'s field default; recurse into nested models and lists of models."""
    for key_node, value_node in node.value:
        key = key_node.value
        where = f"{path}.{key}" if path else key
        assert key in type(model).model_fields, f"{where}: not a settings key"
        field = type(model).model_fields[key]
        value = getattr(model, key)
        marked = example or _marked(lines, key_node)
        if isinstance(value, BaseModel) and isinstance(value_node, yaml.MappingNode):
            _walk(value_node, value, where, lines, found, example)
            continue
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for i, (item_node, item) in enumerate(zip(value_node.value, value, strict=True)):
                _walk(item_node, item, f"{where}[{i}]", lines, found, example or _marked(lines, item_node))
            continue
        raw = value_node.value if isinstance(value_node, yaml.ScalarNode) else None
        if isinstance(raw, str) and any(m.group(2) is None for m in _VAR.finditer(raw)):
            found["from the environment"].append(where)
            continue
        if field.is_required():
            found["required"].append(where)
            continue
        default = field.get_default(call_default_factory=True, validated_data={})
        if _plain(value) == _plain(default):
            assert example or not marked, f"{where}: marked '{MARK}', but {value!r} is the default"
            found["defaults"].append(where)
        else:
            assert marked, f"{where}: the example shows {value!r}, the code's default is {default!r}"
            found["marked"].append(where)


def test_every_value_in_the_example_is_the_default_or_says_it_is_not() -> None:
    text = EXAMPLE.read_text()
    needed = {m.group(1) for m in _VAR.finditer(text) if m.group(2) is None}
    settings = load_settings(EXAMPLE, env={name: f"test-{name.lower()}" for name in needed})
    found: dict[str, list[str]] = {"defaults": [], "marked": [], "required": [], "from the environment": []}
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    _walk(root, settings, "", text.splitlines(), found)
    # the comparison saw the whole file: every section, the defaults most of all
    seen = [where for paths in found.values() for where in paths]
    assert {where.split(".")[0].split("[")[0] for where in seen} == set(Settings.model_fields)
    assert "ldap[0].groups.nested" in found["defaults"] and "ldap[0].schedule.full" in found["defaults"]
    assert len(found["defaults"]) >= 45, found


def test_a_minimal_source_nests_groups_and_has_the_documented_schedule() -> None:
    source = {"name": "corp", "url": "ldap://127.0.0.1", "users": {"base_dn": "o=x"}, "groups": {"base_dn": "o=x"}}
    settings = Settings.model_validate({"ldap": [source]})
    (loaded,) = settings.ldap
    assert loaded.groups is not None and loaded.groups.nested is True
    assert (loaded.schedule.full, loaded.schedule.incremental) == ("0 */6 * * *", 300.0)
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    assert "nested: true" in EXAMPLE.read_text() and "`groups.nested: true`" in readme
    assert '`schedule: {full: "0 */6 * * *", incremental: 5m}`' in readme
