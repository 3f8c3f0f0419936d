"""Parameter groups (weight-decay rules) and the optimizer factory.

No weight decay for: tensors with ``ndim ≤ 1`` (LayerNorm/RMSNorm gains and biases, 1-D
tokens), names ending in ``.bias``, and names in any ``no_weight_decay()`` set that the model
or one of its submodules returns (timm: ``pos_embed``, ``cls_token``,
``relative_position_bias_table``, ...). A name matches an entry when it equals it, matches it
as an ``fnmatch`` pattern (timm's rule), or ends with ``.`` + entry (so a submodule's entries
and a wrapped model's names still match). Names are stripped of DDP's ``module.`` and
``torch.compile``'s ``_orig_mod.`` components, so they are the same however the model is
wrapped.

When to call :func:`build_optimizer`: with DDP, either side of wrapping (DDP keeps the
parameter objects). With FSDP2, *after* ``fully_shard``: it swaps every parameter for a
DTensor, and an optimizer built before would step the discarded originals.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from weyl.optim.adamw2 import AdamW2
from weyl.optim.gi_adam import GIAdam
from weyl.optim.muon_adamw import MuonWithAdamW, muon_param_ids, split_muon_groups
from weyl.optim.optim_config import OptimConfig, OptimizerName
from weyl.optim.sgdw2 import SGDW2

_WRAPPER_PARTS = {"module", "_orig_mod"}


def clean_param_name(name: str) -> str:
    """``name`` without DDP/compile wrapper components (``module.``, ``_orig_mod.``)."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Entries of every ``no_weight_decay()`` in the model, prefixed with their module path."""
    out: set[str] = set()
    for path, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if not callable(fn):
            continue
        prefix = clean_param_name(path)
        for entry in fn():
            out.add(f"{prefix}.{entry}" if prefix else entry)
    return out


def _matches(name: str, entries: set[str]) -> bool:
    return any(name == e or name.endswith("." + e) or fnmatch.fnmatchcase(name, e) for e in entries)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``[decay group, no-decay group]`` (empty ones dropped), each with ``param_names``."""
    skip = no_weight_decay_names(model)
    decay: tuple[list, list] = ([], [])
    no_decay: tuple[list, list] = ([], [])
    for raw_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = clean_param_name(raw_name)
        exempt = p.ndim <= 1 or name.endswith(".bias") or _matches(name, skip)
        target = no_decay if exempt else decay
        target[0].append(p)
        target[1].append(name)
    groups = []
    for (params, names), wd in ((decay, weight_decay), (no_decay, 0.0)):
        if params:
            groups.append({"params": params, "param_names": names, "weight_decay": wd})
    if not groups:
        raise ValueError("build_optimizer: the model has no parameters with requires_grad=True")
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``model``'s decay/no-decay param groups.

    ``cfg`` checked its values when it was created (:class:`OptimConfig`). Only ``adamw2``
    and ``sgdw2`` read ``tau`` and the σ̂₁ keys; only ``muon`` reads ``muon_*``.
    """
    groups = param_groups(model, cfg.weight_decay)
    betas = (cfg.betas[0], cfg.betas[1])
    name = OptimizerName(cfg.name)
    adam_args = dict(lr=cfg.lr, betas=betas, eps=cfg.eps)
    if name is OptimizerName.adamw:
        # CUDA: fused (one kernel; takes the crash guard's found_inf flag, so no host sync)
        kernel = {"fused": True} if groups[0]["params"][0].is_cuda else {"foreach": True}
        return torch.optim.AdamW(groups, **kernel, **adam_args)
    if name is OptimizerName.radam:
        # Decoupled decay (RAdamW), so its weight decay means what AdamW's does.
        return torch.optim.RAdam(groups, decoupled_weight_decay=True, foreach=True, **adam_args)
    if name is OptimizerName.gi_adam:
        return GIAdam(groups, foreach=True, **adam_args)
    if name is OptimizerName.stable_adamw:
        from weyl.optim.stable_adamw import stable_adamw

        return stable_adamw(groups, **adam_args)
    if name is OptimizerName.muon:
        muon_groups, adamw_groups = split_muon_groups(groups, muon_param_ids(model))
        return MuonWithAdamW(
            muon_groups,
            adamw_groups,
            muon_momentum=cfg.muon_momentum,
            adjust_lr_fn=str(cfg.muon_adjust_lr),
            **adam_args,
        )
    clip = dict(
        power_iters=cfg.power_iters, weight_iters=cfg.weight_iters, sigma_floor=cfg.sigma_floor
    )
    if name is OptimizerName.adamw2:
        return AdamW2(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, tau=cfg.tau, **clip)
    # The SGD baseline is SGDW² with the clip off (decoupled decay, as the clipped variant),
    # so "SGD vs SGD + Weyl clip" differs in the clip only; torch's SGD would couple the decay.
    tau = None if name is OptimizerName.sgd else cfg.tau
    return SGDW2(groups, lr=cfg.lr, momentum=cfg.momentum, tau=tau, **clip)
