"""A diagnostics pass that fails is shown in the console log and status.json, not only in
metrics.jsonl (issue 17: every CUDA run failed its diagnostics and nobody saw it)."""

import json

from tests.train.fixtures import build_optimizer, build_synthetic_data, tiny_config
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models import build_model
from weyl.train import run_training
from weyl.train.loggers import read_jsonl
from weyl.train.runner import Factories

ERROR = "Expected all tensors to be on the same device"


class BrokenDiagnostics:
    def __init__(self, model, cfg, probe_inputs, loss_fn) -> None:  # the factory's signature
        pass

    def compute(self, optimizer=None) -> dict[str, float]:
        raise RuntimeError(ERROR)


def test_a_failing_diagnostics_pass_is_in_the_console_and_the_status(tmp_path, capsys) -> None:
    diag = DiagnosticsConfig(enabled=True, every=2, terms=False, lr_every=0)
    cfg = tiny_config(tmp_path, max_steps=4, diagnostics=diag)
    factories = Factories(build_model, build_synthetic_data, build_optimizer, BrokenDiagnostics)
    summary = run_training(cfg, factories=factories)
    assert summary["state"] == "finished"  # a diagnostics bug does not end the run
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "finished"
    assert status["diag_error"] == f"step 4: RuntimeError('{ERROR}')"
    errors = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "diag_error" in r]
    assert errors == [0, 2, 4]
    console = capsys.readouterr()
    assert f"diagnostics failed: RuntimeError('{ERROR}')" in console.out + console.err
