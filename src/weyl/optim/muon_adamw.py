"""Muon on the hidden weight matrices, AdamW on everything else, behind one optimizer.

The split follows modded-nanogpt and torchtitan: torch's ``torch.optim.Muon`` (Newton–Schulz
orthogonalised momentum) takes the 2-D weights of the ``nn.Linear`` layers inside the
network; embeddings, the output head (``lm_head`` / timm's classifier, also when tied to the
token table), norms, biases, convolutions (the patch embedding) and other tensors (position
tables, σReparam's γ) go to AdamW with the usual decay / no-decay groups.

:class:`MuonWithAdamW` is a ``torch.optim.Optimizer`` whose ``param_groups`` are the two inner
optimizers' own group dicts (Muon's first), so the LR schedule (``group["lr"]``,
``group["initial_lr"]``), ``zero_grad`` and ``state_dict`` / ``load_state_dict`` work as for
any optimizer. Its state dict holds the two inner ones under ``"muon"`` and ``"adamw"``.

LR convention: torch's Muon documentation offers ``adjust_lr_fn="match_rms_adamw"``
(update scaled to RMS 0.2·√max(m, n), matching AdamW's typical update RMS) so the AdamW
learning rate and weight decay can be reused unchanged; that is the default here
(``optim.muon_adjust_lr``), so one peak LR means the same thing for every method of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The model's output layers: ``lm_head`` (our GPT) or timm's ``get_classifier()``."""
    heads: list[nn.Module] = []
    lm_head = getattr(model, "lm_head", None)
    if isinstance(lm_head, nn.Module):
        heads.append(lm_head)
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        classifier = get_classifier()
        if isinstance(classifier, nn.Module):
            heads.append(classifier)
    return heads


def muon_param_ids(model: nn.Module) -> set[int]:
    """``id`` of every hidden matrix Muon should update: 2-D ``nn.Linear`` weights that are not
    the output head's and not tied to an embedding table."""
    excluded = {id(p) for head in head_modules(model) for p in head.parameters()}
    excluded |= {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Linear)
        and m.weight.ndim == 2
        and m.weight.requires_grad
        and id(m.weight) not in excluded
    }


def split_muon_groups(groups: list[dict], muon_ids: set[int]) -> tuple[list[dict], list[dict]]:
    """Split decay/no-decay ``groups`` into (Muon groups, AdamW groups), keeping each group's
    weight decay and ``param_names``; empty groups are dropped."""
    muon: list[dict] = []
    adamw: list[dict] = []
    for group in groups:
        names = group.get("param_names", [None] * len(group["params"]))
        for target, keep in ((muon, True), (adamw, False)):
            pairs = [(p, n) for p, n in zip(group["params"], names) if (id(p) in muon_ids) == keep]
            if pairs:
                params, pnames = zip(*pairs)
                rest = {k: v for k, v in group.items() if k not in ("params", "param_names")}
                target.append({"params": list(params), "param_names": list(pnames), **rest})
    return muon, adamw


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` over ``muon_groups`` and ``torch.optim.AdamW`` over ``adamw_groups``."""

    def __init__(
        self,
        muon_groups: list[dict],
        adamw_groups: list[dict],
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        muon_momentum: float = 0.95,
        adjust_lr_fn: str = "match_rms_adamw",
    ) -> None:
        if not muon_groups:
            raise ValueError(
                "optim.name=muon: the model has no hidden 2-D Linear weights for Muon; "
                "choose another optimizer"
            )
        self.muon = torch.optim.Muon(
            muon_groups, lr=lr, momentum=muon_momentum, adjust_lr_fn=adjust_lr_fn
        )
        self.adamw = (
            torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, foreach=True)
            if adamw_groups
            else None
        )
        # The base class appends the very group dicts it is given, so the schedule's writes to
        # self.param_groups reach the inner optimizers.
        super().__init__(self._inner_groups(), defaults={"lr": lr})

    def _inners(self) -> list[torch.optim.Optimizer]:
        return [self.muon] if self.adamw is None else [self.muon, self.adamw]

    def inner_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers that hold the state; torch's distributed state-dict helpers take them
        as a tuple (one state dict keyed by parameter name). After loading through them, call
        :meth:`repoint_groups`."""
        return self._inners()

    def repoint_groups(self) -> None:
        """Point ``param_groups`` at the inner optimizers' groups again (a load rebuilds them)."""
        self.param_groups = self._inner_groups()

    def _inner_groups(self) -> list[dict]:
        return [g for opt in self._inners() for g in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Muon step and one AdamW step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self._inners():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of both inner optimizers' parameters."""
        for opt in self._inners():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """``{"muon": ..., "adamw": ...}``: the inner optimizers' own state dicts."""
        return {
            "muon": self.muon.state_dict(),
            "adamw": None if self.adamw is None else self.adamw.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; the inner optimizers rebuild their group dicts, so
        ``param_groups`` is re-pointed at them."""
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError(
                "MuonWithAdamW.load_state_dict: expected keys 'muon' and 'adamw' "
                f"(a checkpoint of optim.name=muon), got {sorted(state_dict)}"
            )
        self.muon.load_state_dict(state_dict["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self._inner_groups()
