"""The method names (``config/methods.py``): one definition, read by the schema, the library
and the CLI, and written as the same strings YAML files and saved manifests hold."""

from __future__ import annotations

import json

import pytest
import yaml

from automl.config.methods import SelectionMethod, VoteMethod
from automl.config.schema import config_from_dict
from automl.errors import ConfigError


def test_members_are_their_strings() -> None:
    assert VoteMethod.names() == ("majority", "soft")
    assert SelectionMethod.names() == ("greedy", "top_k")
    assert VoteMethod.SOFT == "soft" and f"{VoteMethod.SOFT}" == "soft"
    assert str(SelectionMethod.TOP_K) == "top_k"
    assert json.dumps({"vote": VoteMethod.MAJORITY}) == '{"vote": "majority"}'


def test_the_schema_parses_them_and_writes_back_plain_strings() -> None:
    raw = {"data": {"format": "digits"}, "ensemble": {"vote": "soft", "selection": "top_k"}}
    config = config_from_dict(raw, source="t.yaml", default_name="t")
    assert config.ensemble.vote is VoteMethod.SOFT
    assert config.ensemble.selection is SelectionMethod.TOP_K
    section = config.to_dict()["ensemble"]
    assert type(section["vote"]) is str and type(section["selection"]) is str
    assert yaml.safe_load(yaml.safe_dump(section))["vote"] == "soft"  # safe_dump takes it


@pytest.mark.parametrize("key", ["vote", "selection"])
def test_one_error_for_a_bad_name(key: str) -> None:
    raw = {"data": {"format": "digits"}, "ensemble": {key: "best"}}
    with pytest.raises(ConfigError, match=rf"t\.yaml: ensemble\.{key} must be one of .*'best'"):
        config_from_dict(raw, source="t.yaml", default_name="t")
    with pytest.raises(ConfigError, match="--vote must be one of majority, soft, got 'best'"):
        VoteMethod.parse("best", "--vote")


def _method_name_sets(path) -> list[str]:
    """Tuples/lists/sets of method names, and comparisons with one, written in ``path``."""
    import ast

    names = set(VoteMethod.names()) | set(SelectionMethod.names())
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            for group in (VoteMethod.names(), SelectionMethod.names()):
                if set(group) <= values:
                    found.append(f"{path.name}:{node.lineno}: {sorted(values)}")
        elif isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Constant) and side.value in names:
                    found.append(f"{path.name}:{node.lineno}: compares with {side.value!r}")
    return found


def test_no_second_list_of_method_names_in_the_package(tmp_path) -> None:
    from pathlib import Path

    import automl

    package = Path(automl.__file__).resolve().parent
    found = [
        hit
        for source in sorted(package.rglob("*.py"))
        if source.name != "methods.py"
        for hit in _method_name_sets(source)
    ]
    assert found == [], "method names written outside config/methods.py:\n" + "\n".join(found)
    planted = tmp_path / "planted.py"
    planted.write_text('VOTES = ("majority", "soft")\nif x == "greedy":\n    pass\n')
    assert len(_method_name_sets(planted)) == 2
