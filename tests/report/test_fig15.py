"""Fig. 15 end to end: a tiny AdamW² run logs each tensor's actual LR, `weyl report` draws it."""

import json

import pytest

from tests.train.fixtures import build_optimizer, synthetic_factories, tiny_config
from weyl.commands.report import main as main_report
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.diagnostics.tensor_kinds import FIG15_KINDS
from weyl.models import build_model
from weyl.optim.optim_config import OptimConfig
from weyl.report import figures
from weyl.train import run_training

EVERY = 4
STEPS = 12
TAU = 0.02


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "event" not in r]


def _train(run_dir, optim, lr_every=EVERY, capture=None):
    """A 12-step 2-layer GPT run logging every step; ``capture`` collects, per completed
    update, what each lr_report() call returned."""
    factories = synthetic_factories(diagnostics=True)

    def recording_optimizer(model, cfg):
        opt = build_optimizer(model, cfg)
        if capture is not None:
            read, update = opt.lr_report, opt.step
            updates = [0]

            def lr_report():
                report = read()
                capture.setdefault(updates[0], []).append(report)
                return report

            def step(*args, **kwargs):
                updates[0] += 1
                return update(*args, **kwargs)

            opt.lr_report, opt.step = lr_report, step
        return opt

    factories.build_optimizer = recording_optimizer
    diagnostics = DiagnosticsConfig(every=STEPS, terms=False, lr_every=lr_every)
    cfg = tiny_config(run_dir, max_steps=STEPS, optim=optim, diagnostics=diagnostics)
    assert run_training(cfg, factories=factories)["state"] == "finished"
    return cfg


@pytest.fixture
def figure_spy(monkeypatch):
    """What each saved figure holds, read from its matplotlib objects before it is closed."""
    seen = {}
    original = figures._save

    def spy(fig, path):
        seen[path.name] = {
            "title": fig._suptitle.get_text() if fig._suptitle else "",
            "panels": [
                {
                    "title": ax.get_title(),
                    "xlabel": ax.get_xlabel(),
                    "ylabel": ax.get_ylabel(),
                    "yscale": ax.get_yscale(),
                    "lines": {
                        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                        for line in ax.lines
                    },
                }
                for ax in fig.axes
            ],
        }
        return original(fig, path)

    monkeypatch.setattr(figures, "_save", spy)
    return seen


def test_adamw2_run_logs_every_tensor_at_the_interval_and_report_draws_fig15(tmp_path, figure_spy):
    run_dir = tmp_path / "run"
    reports = {}
    cfg = _train(run_dir, OptimConfig(name="adamw2", lr=3e-3, tau=TAU), capture=reports)
    records = _records(run_dir)
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    # log_every=1: the trainer reads the optimizer's record once after every update, for the
    # optim/* summary and the per-tensor keys together; the diagnostics (steps 0 and 12) once more.
    reads = {update: len(calls) for update, calls in reports.items()}
    assert reads == {0: 1, **{s: 1 for s in range(1, STEPS)}, STEPS: 2}

    model = build_model(cfg.model)
    block_names = [name for name, _ in model.blocks[0].named_parameters()]
    expected = {f"{p}/L{i:02d}/{n}" for i in (0, 1) for n in block_names for p in ("lr", "clip")}
    clipped_and_not = set()
    for record in records:
        step = record["step"]
        tensor_keys = {
            k for k in record if k.startswith("clip/") or (k.startswith("lr/L") and "." in k)
        }
        if step == 0 or step % EVERY:
            assert not tensor_keys, step
            continue
        assert tensor_keys == expected
        report = reports[step][0]
        for i in (0, 1):
            for name in block_names:
                row = report[f"blocks.{i}.{name}"]
                lr_eff = record[f"lr/L{i:02d}/{name}"]
                clipped = record[f"clip/L{i:02d}/{name}"]
                assert row["lr"] == pytest.approx(record["lr"], rel=1e-12)  # scheduled LR
                assert lr_eff == row["lr_eff"] and clipped == row["clipped"]
                # Clipped exactly where lr·σ̂(ΔW)/max(σ̂(W), floor) > τ; else the scheduled LR.
                ratio = record["lr"] * row["sigma_update"] / max(row["sigma_weight"], 1e-2)
                if abs(ratio / TAU - 1) > 1e-5:  # the optimizer decides in fp32: no ties here
                    assert clipped == float(ratio > TAU)
                if clipped:
                    assert lr_eff == pytest.approx(record["lr"] * TAU / ratio, rel=1e-5)
                else:
                    assert lr_eff == pytest.approx(record["lr"], rel=1e-6)
                clipped_and_not.add(clipped)
    assert clipped_and_not == {0.0, 1.0}

    assert main_report([str(run_dir)]) == 0
    assert (run_dir / "report" / "lr_per_tensor.png").stat().st_size > 1000
    fig = figure_spy["lr_per_tensor.png"]
    assert "Fig. 15" in fig["title"]
    assert [p["title"] for p in fig["panels"]] == [label for _, label in FIG15_KINDS]
    sched_steps = [r["step"] for r in records]
    sched = [r["lr"] for r in records]
    for panel in fig["panels"]:
        assert panel["yscale"] == "log" and panel["xlabel"] == "step"
        assert panel["ylabel"] == "learning rate"
        assert set(panel["lines"]) == {"scheduled", "L00", "L01"}
        assert panel["lines"]["scheduled"] == (sched_steps, sched)
        steps, _ = panel["lines"]["L01"]
        assert steps == list(range(EVERY, STEPS + 1, EVERY))
    w2 = fig["panels"][-1]["lines"]["L00"][1]
    assert w2 == [r["lr/L00/mlp.fc2.weight"] for r in records if r["step"] in steps]
    # Nothing else is labelled Fig. 15.
    assert [name for name, f in figure_spy.items() if "Fig. 15" in f["title"]] == [
        "lr_per_tensor.png"
    ]
    assert "lr_per_tensor.png" in (run_dir / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("optim", "lr_every"),
    [
        (OptimConfig(name="adamw", lr=3e-3, tau=None), EVERY),  # torch AdamW: no clip
        (OptimConfig(name="adamw2", lr=3e-3, tau=None), EVERY),  # AdamW² with τ off
        (OptimConfig(name="adamw2", lr=3e-3, tau=TAU), 0),  # the log turned off
    ],
    ids=["adamw", "adamw2_tau_off", "lr_every_0"],
)
def test_no_per_tensor_lr_without_a_clip_or_with_the_interval_off(tmp_path, optim, lr_every):
    run_dir = tmp_path / "run"
    _train(run_dir, optim, lr_every=lr_every)
    keys = {k for r in _records(run_dir) for k in r}
    assert not any(k.startswith("clip/") or (k.startswith("lr/L") and "." in k) for k in keys)
    assert main_report([str(run_dir)]) == 0
    assert not (run_dir / "report" / "lr_per_tensor.png").exists()
