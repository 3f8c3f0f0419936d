"""`weyl report` and `weyl compare` on small run directories written here."""

import json
import math

import pytest
import yaml
from matplotlib import image as mpimg

from weyl.commands.compare import main as main_compare
from weyl.commands.report import main as main_report
from weyl.report import figures
from weyl.report.run_data import load_run, run_summary
from weyl.report.run_reports import compare_runs, report_run


def write_run(root, name, crash_at=None, layers=2, steps=60):
    """A run directory shaped like the trainer's output, with known numbers."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"name": name}))
    lines = []
    for step in range(0, steps + 1, 10):
        if crash_at is not None and step > crash_at:
            break
        rec = {
            "step": step,
            "loss": 4.0 - step / 30,
            "lr": 1e-3,
            "tokens_per_s": 1000.0 + step,
            "elapsed": step / 10,
        }
        for i in range(layers):
            layer = f"L{i:02d}"
            rec[f"attn/{layer}/qk_sigma1_max"] = 1.0 + step + i
            rec[f"attn/{layer}/entropy_min"] = 2.0 - step / 100 - i / 10
            for s in (1, 2, 4, 8):
                rec[f"attn/{layer}/sec_s{s}_mean"] = min(1.0, s / 8 + step / 1000)
                rec[f"attn/{layer}/sec_s{s}_max"] = min(1.0, s / 8 + step / 500 + i / 100)
            for suffix, _ in figures.FIG1_TERMS:
                rec[f"terms/{layer}/{suffix}"] = 1.0 + step / 7
            rec[f"lr/{layer}/effective_mean"] = 1e-3 / (1 + i)
            rec[f"lr/{layer}/clip_rate"] = 0.5
        rec["attn/qk_sigma1_max"] = max(rec[f"attn/L{i:02d}/qk_sigma1_max"] for i in range(layers))
        rec["attn/entropy_min"] = min(rec[f"attn/L{i:02d}/entropy_min"] for i in range(layers))
        if step % 30 == 0:
            rec["eval/loss"] = rec["loss"] + 0.1
        lines.append(json.dumps(rec))
    (root / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    state = (
        {"state": "crashed", "step": crash_at, "reason": "non-finite loss"}
        if crash_at
        else {"state": "finished", "step": steps}
    )
    (root / "status.json").write_text(json.dumps(state))
    return root


@pytest.fixture
def count_axes(monkeypatch):
    seen = {}
    original = figures._save

    def spy(fig, path):
        seen[path.name] = len(fig.axes)
        return original(fig, path)

    monkeypatch.setattr(figures, "_save", spy)
    return seen


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0


def test_summary_reads_the_numbers_the_run_logged(tmp_path):
    run = load_run(write_run(tmp_path / "a", "a", crash_at=30))
    summary = run_summary(run)
    assert summary["state"] == "crashed" and summary["crashed_at"] == 30
    assert summary["min_loss"] == pytest.approx(4.0 - 30 / 30)
    assert summary["max_qk_sigma1"] == pytest.approx(1.0 + 30 + 1)
    assert summary["min_entropy"] == pytest.approx(2.0 - 0.3 - 0.1)
    assert summary["final_sec_s2"] == pytest.approx(2 / 8 + 30 / 500 + 0.01)
    assert run.layers() == ["L00", "L01"]


def test_report_renders_every_figure_with_its_panels(tmp_path, count_axes):
    run_dir = write_run(tmp_path / "run", "run", layers=4)
    written = report_run(run_dir)
    for path in written.values():
        if path.suffix == ".png":
            assert_png(path)
    assert count_axes["curves.png"] == 2
    assert count_axes["layer_spectra.png"] == 2
    assert count_axes["layer_lr.png"] == 2
    assert count_axes["sec.png"] == 3  # first, middle, last block
    assert count_axes["terms_L00.png"] == 15  # Fig. 1's fifteen terms
    assert {"terms_L00", "terms_L02", "terms_L03"} <= set(written)
    assert "crashed" not in written["markdown"].read_text()


def test_report_draws_saved_attention_maps(tmp_path, count_axes):
    import torch

    run_dir = write_run(tmp_path / "run", "run")
    (run_dir / "attention").mkdir()
    maps = {
        "L00": torch.softmax(torch.randn(2, 8, 8), -1).half(),
        "L01": torch.eye(8).expand(2, 8, 8).half(),
    }
    torch.save(maps, run_dir / "attention" / "step_0000010.pt")
    written = report_run(run_dir, steps=[10])
    assert_png(written["attention_10"])
    assert count_axes["attention_step10.png"] == 2


def test_compare_overlays_runs_and_marks_the_crash(tmp_path, count_axes, capsys):
    a = write_run(tmp_path / "warm", "adamw_warmup")
    b = write_run(tmp_path / "nowarm", "adamw_nowarmup", crash_at=20)
    assert main_compare([str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "crashed at step 20" in out and "adamw_warmup" in out
    assert_png(tmp_path / "cmp" / "compare.png")
    assert count_axes["compare.png"] == 6
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["run"] for r in rows] == ["adamw_warmup", "adamw_nowarmup"]
    assert all(math.isfinite(r["final_loss"]) for r in rows)


def test_missing_run_dir_is_one_line(tmp_path, capsys):
    assert main_report([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "metrics.jsonl" in err and "\n" not in err
    with pytest.raises(FileNotFoundError):
        compare_runs([tmp_path / "nope"], tmp_path / "out")


def test_report_of_a_real_training_run_draws_its_attention_maps(tmp_path, count_axes):
    """End to end: the trainer saves probe attention maps, `weyl report` draws every panel."""
    import torch

    from weyl.config.compose import load_config
    from weyl.train import run_training

    run_dir = tmp_path / "run"
    cfg = load_config(
        [
            "recipe=smoke/gpt_tiny",
            f"run_dir={run_dir}",
            "logger.progress=false",
            "trainer.max_steps=20",
            "diagnostics.every=10",
            "diagnostics.attention_maps_every=10",
        ]
    )
    assert run_training(cfg)["state"] == "finished"
    saved = sorted((run_dir / "attention").glob("step_*.pt"))
    assert [p.name for p in saved] == ["step_0000000.pt", "step_0000010.pt", "step_0000020.pt"]
    maps = torch.load(saved[-1], weights_only=True)
    assert sorted(maps) == ["L00", "L01"] and maps["L00"].shape == (2, 64, 64)
    rows = maps["L00"].float().sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-2)  # softmax rows (fp16)
    assert torch.all(maps["L00"].float().triu(1) == 0)  # causal
    written = report_run(run_dir)
    assert {"curves", "spectra", "lr", "sec", "terms_L00"} <= set(written)
    attention = [k for k in written if k.startswith("attention_")]
    assert attention and count_axes[written[attention[0]].name] == 2


def test_lr_sweep_plot_has_one_line_per_method(tmp_path, count_axes):
    rows = [
        {"method": m, "lr": lr, "final_loss": loss}
        for m, losses in (("adamw_warmup", (1.3, 1.8, 2.2)), ("adamw2_nowarmup", (1.3, 1.29, 1.29)))
        for lr, loss in zip((5e-3, 1e-2, 2e-2), losses)
    ]
    rows.append({"method": "adamw_nowarmup", "lr": 2e-2, "final_loss": float("inf")})  # crashed
    path = figures.plot_final_loss_vs_lr(rows, tmp_path / "sweep.png")
    assert_png(path)
    assert count_axes["sweep.png"] == 1
