"""run_training's own decisions: batch geometry, epochs, precision, failures, progress bar."""

import json

import pytest
import torch

from tests.train.fixtures import step_records, synthetic_factories, tiny_config
from weyl.train import run_training
from weyl.train.loggers import ProgressBar
from weyl.train.runner import batch_geometry, total_steps_for


def test_batch_geometry_and_epochs():
    assert batch_geometry(32, 0, 4) == (8, 1)  # no accumulation by default
    assert batch_geometry(32, 2, 4) == (2, 4)  # 32 = 2 per rank x 4 ranks x 4 micro steps
    with pytest.raises(ValueError, match=r"trainer\.micro_batch_size"):
        batch_geometry(32, 3, 2)
    cfg = tiny_config("unused", epochs=2.5, global_batch_size=8)
    assert total_steps_for(cfg, samples_per_epoch=100) == 32  # ceil(2.5 * 100 / 8)


def test_bf16_autocast_on_cpu_tracks_fp32(tmp_path):
    fp32 = run_training(tiny_config(tmp_path / "a", max_steps=6), factories=synthetic_factories())
    bf16 = run_training(
        tiny_config(tmp_path / "b", max_steps=6, precision="bf16"), factories=synthetic_factories()
    )
    a, b = step_records(tmp_path / "a"), step_records(tmp_path / "b")
    assert a[1]["loss"] != b[1]["loss"]  # bf16 really ran
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], abs=0.05)
    with pytest.raises(ValueError, match=r"trainer\.precision"):
        run_training(tiny_config(tmp_path / "c", precision="fp16"), factories=synthetic_factories())


def test_an_exception_is_recorded_in_status_and_reraised(tmp_path):
    factories = synthetic_factories()

    def broken_data(cfg, **kw):
        raise FileNotFoundError("no train.bin")

    factories.build_data = broken_data
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError):
        run_training(tiny_config(tmp_path / "run"), factories=factories)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "no train.bin" in status["reason"]


def test_progress_bar_tracks_steps():
    bar = ProgressBar(total=10, start=2, unit="tokens", force=True)
    bar.update(5, {"loss": 1.5, "lr": 1e-3, "tokens_per_s": 1000.0})
    task = bar._progress.tasks[0]
    assert task.completed == 5 and "loss 1.5000" in task.fields["info"]
    bar.close()


@pytest.mark.slow
def test_compiled_model_tracks_eager(tmp_path):
    eager = run_training(tiny_config(tmp_path / "a", max_steps=6), factories=synthetic_factories())
    compiled = run_training(
        tiny_config(tmp_path / "b", max_steps=6, compile=True), factories=synthetic_factories()
    )
    assert compiled["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)


def test_vocabulary_larger_than_the_model_is_a_one_line_error(tmp_path):
    from weyl.config.compose import load_config
    from weyl.train import run_training

    cfg = load_config(
        [
            "recipe=smoke/gpt_tiny",
            "data=kjv_gpt2",
            "data.block_size=64",
            f"run_dir={tmp_path / 'r'}",
        ]
    )
    with pytest.raises(ValueError, match=r"model.vocab_size=128 .* set model.vocab_size >= 50257"):
        run_training(cfg)


def test_every_update_runs_in_train_mode_after_eval_and_diagnostics(tmp_path):
    # The trainer re-enters train mode only after eval/diagnostics (not on every update);
    # both switch modules to eval, so each later update must still see train mode everywhere.
    from weyl.diagnostics.diagnostics_config import DiagnosticsConfig

    seen: list[bool] = []
    factories = synthetic_factories(diagnostics=True)
    build = factories.build_model

    def build_recording(model_cfg):
        model = build(model_cfg)

        def record(module, args):
            # training updates: grad on, micro batch of 8 (probe batches hold 4, eval is no_grad)
            if torch.is_grad_enabled() and args[0].shape[0] == 8:
                seen.append(all(m.training for m in module.modules()))

        model.register_forward_pre_hook(record)
        return model

    factories.build_model = build_recording
    diag = DiagnosticsConfig(every=4, terms=False, per_head=False)
    cfg = tiny_config(tmp_path / "run", eval_every=3, diagnostics=diag, resume="never")
    summary = run_training(cfg, factories=factories)
    assert summary["state"] == "finished"
    assert len(seen) == 12 and all(seen), seen
