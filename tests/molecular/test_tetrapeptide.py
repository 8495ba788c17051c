"""The shipped alanine tetrapeptide model, its default endpoints and a tiny paths run (issue 22)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from spacetime_md.molecular import load_system
from spacetime_md.molecular.model.pretrained import (PRETRAINED_SYSTEMS, checkpoint_system, load_pretrained,
                                                     pretrained_path)
from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC, PathConfig
from spacetime_md.molecular.paths.run import run_paths, shipped_checkpoint
from spacetime_md.molecular.paths.structures import check_model_matches_system, resolve_structure
from spacetime_md.molecular.system.presets import DEFAULT_ENDPOINTS
from spacetime_md.molecular.testing import assert_equivariant

NAME = "alanine-tetrapeptide"


@pytest.fixture(scope="module")
def system():
    return load_system(NAME)


@pytest.fixture(scope="module")
def model():
    return load_pretrained(NAME)


def test_shipped_model_matches_its_card_and_the_system(system, model):
    path = pretrained_path(NAME)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "spacetime-md train" in card["command"] and "spacetime-md sample" in card["data_command"]
    assert PRETRAINED_SYSTEMS[path.name] == NAME
    assert shipped_checkpoint(system) == path
    assert model.n_atoms == system.n_atoms == 42 and model.chirality
    check_model_matches_system(model, system)
    # The shipped model's system is the preset (with every state of the current states file).
    recorded = checkpoint_system(model)
    assert recorded.name == NAME
    assert {s.name for s in recorded.states} >= {"all_C7eq", "mid_C7ax", "nterm_alpha_R"}
    model64 = load_pretrained(NAME, dtype=torch.float64)
    x = 0.5 * torch.randn(2, 3 * 42, dtype=torch.float64)
    assert_equivariant(model64, x, torch.tensor([1.0, 6.0], dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("pair", [DEFAULT_ENDPOINTS[NAME], ("all_C7eq", "nterm_alpha_R")])
def test_endpoints_resolve_to_structures_in_their_states(system, pair):
    for name in pair:
        x, _ = resolve_structure(system, name, "start")
        labels = system.assign_states(np.asarray(x).reshape(1, -1, 3))
        assert [s.name for s in system.states][int(labels[0])] == name


def test_tiny_paths_run_hits_and_keeps_chirality(tmp_path):
    # 2 geodesic paths with the default endpoints, a short solve and a short sampler.
    geodesic = dataclasses.replace(DEFAULT_GEODESIC, max_steps=6, n_points=(16,))
    config = PathConfig(n_paths=2, n_points=24, n_steps=100, seed=0, baseline=False, geodesic=geodesic)
    report = run_paths(tmp_path / "paths", system=NAME, config=config, plots=False)
    assert (report["endpoints"]["start"], report["endpoints"]["end"]) == ("all_C7eq", "mid_C7ax")
    geo = report["geodesic"]
    assert geo["target_hit_rate"] == 1.0, geo.get("target_hit_by_group")
    assert geo["chirality_kept_fraction"] == 1.0
