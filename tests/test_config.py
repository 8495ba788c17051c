"""Reading dataclass settings from JSON files (spacetime_md._config)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from spacetime_md._config import read_config_fields


@dataclass
class _Settings:
    a: int = 1
    b: str = "x"


def test_reads_fields_directly_or_from_a_run_config(tmp_path):
    direct = tmp_path / "direct.json"
    direct.write_text(json.dumps({"a": 3}))
    assert read_config_fields(direct, _Settings, "--config", "settings") == {"a": 3}
    run = tmp_path / "config.json"
    run.write_text(json.dumps({"command": "x", "settings": {"b": "y"}}))
    assert read_config_fields(run, _Settings, "--config", "settings") == {"b": "y"}


@pytest.mark.parametrize("content, message", [
    (None, r"--config: expected a JSON file, got missing path"),
    ("{not json", r"--config: expected JSON, got a parse error in bad.json"),
    ("[1, 2]", r"--config: expected a JSON object of _Settings fields, got list"),
    ('{"a": 1, "c": 2}', r"--config: expected _Settings fields \['a', 'b'\], got unknown \['c'\]"),
])
def test_errors_say_what_was_expected_and_got(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_config_fields(path, _Settings, "--config", "settings")
