"""Every stabilizer switch runs through ``weyl train`` (the console script, a subprocess)."""

from __future__ import annotations

import json

import pytest

from tests.train.cli_runs import weyl_train

SWITCHES = {
    "radam": ["optim.name=radam"],
    "gi_adam": ["optim.name=gi_adam"],
    "stable_adamw": ["optim.name=stable_adamw"],
    "muon": ["optim.name=muon"],
    # with the diagnostics on: the attention view must work with normalised q and k
    "qk_norm": ["model.qk_norm=true", "diagnostics.enabled=true", "diagnostics.every=12"],
    "z_loss": ["trainer.z_loss=1e-4"],
    "baseline": [],
}


def _records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "event" not in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, kjv_data):
    """One 12-step run per switch (plus plain AdamW²), finished and read back."""
    out = {}
    for name, overrides in SWITCHES.items():
        run_dir = tmp_path_factory.mktemp("stabilizers") / name
        done = weyl_train(run_dir, kjv_data, *overrides)
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
        out[name] = _records(run_dir)
    return out


@pytest.mark.parametrize("name", [n for n in SWITCHES if n != "baseline"])
def test_switch_trains_to_the_end(runs, name):
    records = runs[name]
    assert records[-1]["step"] == 12
    assert all(r["loss"] == r["loss"] for r in records if "loss" in r)  # no NaN
    assert "eval/loss" in records[-1]


def test_qk_norm_run_reports_attention_diagnostics(runs):
    diag = [r for r in runs["qk_norm"] if "attn/entropy_min" in r]
    assert diag and all(r["attn/entropy_min"] > 0 for r in diag)


def test_z_loss_is_logged_apart_and_the_loss_stays_the_cross_entropy(runs):
    z, base = runs["z_loss"], runs["baseline"]
    first_z = next(r for r in z if r["step"] == 1)
    first_base = next(r for r in base if r["step"] == 1)
    # Step 1's loss is measured before any update: same weights, same batch, so the logged
    # loss is the same cross-entropy with or without the z term in the objective.
    assert first_z["loss"] == first_base["loss"]
    assert 0 < first_z["z_loss"] < 1e-2  # 1e-4 · log²Z with log Z ≈ ln(vocab) at init
    assert "z_loss" not in first_base
