"""Diagnostics on the model's device (issue 17) and the sampled effective rank.

The 'meta' device stands in for cuda: a pass over a model on 'meta' must create and read
no tensor anywhere else. The pass that failed on every CUDA run (spectra brought to the host,
maps on the GPU) makes a CPU tensor on the way, which this test reports.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from weyl.diagnostics import Diagnostics
from weyl.diagnostics.attention_maps import effective_rank, sampled_effective_rank
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.diagnostics.monitor import host_floats
from weyl.models import build_model
from weyl.models.model_config import GPTModelConfig


class _DeviceWatch(TorchDispatchMode):
    """Every aten op that takes or returns a tensor off ``device``."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self.offenders: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves((args, kwargs or {}, out)):
            if isinstance(leaf, torch.Tensor) and leaf.device.type != self.device:
                self.offenders.append(f"{func} on {leaf.device}")
        return out


def _tiny_gpt(block: int = 24) -> torch.nn.Module:
    cfg = GPTModelConfig(
        n_layer=2, n_head=2, n_embd=32, block_size=block, vocab_size=16, dropout=0.0, bias=False
    )
    return build_model(cfg)


def test_a_diagnostics_pass_keeps_every_tensor_on_the_models_device() -> None:
    torch.manual_seed(0)
    model = _tiny_gpt().to("meta")
    tokens = torch.randint(0, 16, (2, 25), device="meta")
    x, y = tokens[:, :-1], tokens[:, 1:]

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        return F.cross_entropy(m(x).flatten(0, 1), y.flatten())

    # rank_queries 8 < 24 query rows: the sampled route runs too
    cfg = DiagnosticsConfig(rank_queries=8, rank_samples=2)
    diag = Diagnostics(model, cfg, x, loss_fn)
    with _DeviceWatch("meta") as watch:
        out = diag.compute_tensors()
    assert watch.offenders == []
    assert {v.device.type for v in out.values()} == {"meta"}
    for key in ("attn/L01/erank_mean", "terms/L00/grad_x_norm", "collapse/first_malignant_layer"):
        assert key in out


def test_host_floats_reads_a_cpu_pass_like_the_per_key_floats() -> None:
    torch.manual_seed(0)
    model = _tiny_gpt()
    tokens = torch.randint(0, 16, (2, 25))
    diag = Diagnostics(model, DiagnosticsConfig(rank_queries=8), tokens[:, :-1])
    tensors = diag.compute_tensors()
    floats = host_floats(tensors)
    assert floats.keys() == tensors.keys()
    assert all(floats[k] == float(v) or math.isnan(floats[k]) for k, v in tensors.items())
    assert diag.compute().keys() == floats.keys()


def _erank_by_svd(m: torch.Tensor) -> float:
    s = torch.linalg.svdvals(m.double())
    p = s / s.sum()
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def _causal_softmax(logits: torch.Tensor) -> torch.Tensor:
    n = logits.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    return logits.masked_fill(future, float("-inf")).softmax(-1)


def test_sampled_erank_matches_the_full_svd_where_the_rule_needs_it() -> None:
    n, m = 96, 24
    g = torch.Generator().manual_seed(0)
    identity = torch.eye(n)
    rank_one = torch.zeros(n, n)
    rank_one[:, 0] = 1.0  # every query on the first key: the malignant extreme
    shifted = _causal_softmax(torch.eye(n).roll(-1, dims=1) * 30 - torch.eye(n) * 30)
    dense = _causal_softmax(torch.randn(n, n, generator=g))
    maps = torch.stack([identity, rank_one, shifted, dense])
    erank, fraction = sampled_effective_rank(maps, m)
    full = torch.tensor([_erank_by_svd(a) / n for a in maps])
    assert fraction[0].item() == pytest.approx(1.0, abs=1e-6)
    assert erank[1].item() == pytest.approx(1.0, abs=1e-6)
    assert fraction[2].item() == pytest.approx(full[2].item(), abs=0.05)
    # the rule's verdict (erank / N < 0.25: low rank) is the same for every map
    assert ((fraction < 0.25) == (full < 0.25)).all()
    # with every row the route is the full SVD's effective rank, exactly
    exact, exact_fraction = sampled_effective_rank(maps, n)
    assert torch.equal(exact, effective_rank(maps)) and torch.equal(exact_fraction, exact / n)
    with pytest.raises(ValueError, match="rank_queries"):
        sampled_effective_rank(maps, 0)
