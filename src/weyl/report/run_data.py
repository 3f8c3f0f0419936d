"""Read a run directory (``metrics.jsonl``, ``status.json``, ``config.yaml``) for plots and tables."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_LAYER_KEY = re.compile(r"^attn/(L\d+)/")
# Fig. 15's per-tensor keys, lr/Lxx/<tensor>; a tensor's name has a dot, the per-layer means not.
_TENSOR_LR_KEY = re.compile(r"^lr/(L\d+)/([^/]*\.[^/]*)$")


@dataclass
class RunData:
    """One run's logged records, outcome and config, with helpers to pull series out."""

    path: Path
    records: list[dict[str, Any]]
    status: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of ``key`` over the records that logged a finite value of it."""
        steps, values = [], []
        for record in self.records:
            value = record.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                steps.append(int(record["step"]))
                values.append(float(value))
        return steps, values

    def last(self, key: str) -> float | None:
        """The last logged value of ``key``."""
        _, values = self.series(key)
        return values[-1] if values else None

    def metric_keys(self) -> set[str]:
        """Every metric key the run logged."""
        return {k for record in self.records for k in record}

    def layers(self) -> list[str]:
        """Attention layer names (``L00``, ``L01``, ...) that appear in the diagnostics."""
        return sorted({m.group(1) for k in self.metric_keys() if (m := _LAYER_KEY.match(k))})

    def tensor_lr_keys(self) -> list[tuple[str, str]]:
        """(layer, tensor name in its block) of every ``lr/Lxx/<tensor>`` key, sorted."""
        return sorted(
            (m.group(1), m.group(2)) for k in self.metric_keys() if (m := _TENSOR_LR_KEY.match(k))
        )

    def layer_extreme(self, suffix: str, reduce: str) -> tuple[list[int], list[float]]:
        """Per step, the max (or min) over layers of ``attn/<layer>/<suffix>``."""
        pick = max if reduce == "max" else min
        steps, values = [], []
        for record in self.records:
            found = [
                float(v)
                for k, v in record.items()
                if k.startswith("attn/L")
                and k.endswith("/" + suffix)
                and k.count("/") == 2
                and isinstance(v, int | float)
                and math.isfinite(v)
            ]
            if found:
                steps.append(int(record["step"]))
                values.append(pick(found))
        return steps, values

    @property
    def crashed_at(self) -> int | None:
        """Step of the crash the trainer recorded, or None."""
        if self.status and self.status.get("state") == "crashed":
            return int(self.status.get("step", 0))
        return None


def load_run(path: str | Path) -> RunData:
    """Load a run directory; fails with one line when it holds no ``metrics.jsonl``."""
    root = Path(path)
    metrics = root / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no metrics.jsonl; is {root} a weyl run directory?")
    records = []
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write
    records = [r for r in records if "step" in r]
    status_path = root / "status.json"
    status = json.loads(status_path.read_text()) if status_path.is_file() else None
    if status is not None and status.get("state") == "running":
        from weyl.train.run_lock import lock_is_free  # only here: weyl.train imports torch

        if lock_is_free(root):
            # Nobody holds the run dir: the process died without recording an outcome.
            status = {**status, "state": "killed", "reason": "no process holds the run dir"}
    config_path = root / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    return RunData(root, records, status, config or {})


def _tail_mean(values: list[float], fraction: float = 0.05) -> float | None:
    if not values:
        return None
    n = max(1, int(len(values) * fraction))
    return sum(values[-n:]) / n


def run_summary(run: RunData) -> dict[str, Any]:
    """The comparison row of a run: final/min loss, eval, spectral extremes, outcome, speed."""
    _, loss = run.series("loss")
    _, qk = run.series("attn/qk_sigma1_max")
    _, entropy = run.series("attn/entropy_min")
    _, sec2 = run.layer_extreme("sec_s2_max", "max")
    rate_key = "tokens_per_s" if "tokens_per_s" in run.metric_keys() else "images_per_s"
    _, rate = run.series(rate_key)
    state = (run.status or {}).get("state", "unknown")
    return {
        "run": run.name,
        "state": state,
        "crashed_at": run.crashed_at,
        "final_loss": _tail_mean(loss),
        "min_loss": min(loss) if loss else None,
        "final_eval_loss": run.last("eval/loss"),
        "final_top1": run.last("eval/top1"),
        "max_qk_sigma1": max(qk) if qk else None,
        "min_entropy": min(entropy) if entropy else None,
        "final_entropy": entropy[-1] if entropy else None,
        "final_sec_s2": sec2[-1] if sec2 else None,
        "throughput": sum(rate) / len(rate) if rate else None,
        "throughput_unit": rate_key,
        "wall_s": run.last("elapsed"),
    }
