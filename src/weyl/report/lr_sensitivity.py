"""Learning-rate sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale
Transformer training instabilities", arXiv 2309.14322, §2):

    sensitivity(A) = mean over the LR grid η of [ min(ℓ(A, η), ℓ₀) − min_η ℓ(A, η) ]

ℓ(A, η) is the final eval loss of method A at peak LR η and ℓ₀ the loss at initialisation; a
run that diverged or crashed (no loss, NaN or ±inf) counts as ℓ₀, and a finite loss above ℓ₀
is capped at ℓ₀, so one bad LR costs at most ℓ₀ − best. 0 means every LR of the grid reached
the method's best loss. A method with no run below ℓ₀ also scores 0 by this formula (every
term is ℓ₀ − ℓ₀); read it together with its best loss (:func:`best_loss`), which is then ℓ₀.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def capped_losses(
    final_losses: Mapping[float, float | None], init_loss: float
) -> dict[float, float]:
    """Per peak LR: ``min(loss, init_loss)``, with missing / non-finite losses as ``init_loss``."""
    if not (math.isfinite(init_loss) and init_loss > 0):
        raise ValueError(f"init_loss={init_loss} must be a finite loss > 0 (ℓ₀, e.g. ln(vocab))")
    if not final_losses:
        raise ValueError("final_losses is empty; give one final eval loss per peak LR of the grid")
    out: dict[float, float] = {}
    for lr, loss in final_losses.items():
        if not lr > 0:
            raise ValueError(f"peak LR {lr} must be > 0")
        diverged = loss is None or not math.isfinite(loss)
        out[lr] = init_loss if diverged else min(float(loss), init_loss)
    return out


def best_loss(final_losses: Mapping[float, float | None], init_loss: float) -> float:
    """``min_η min(ℓ(η), ℓ₀)``: the method's best final loss over the grid."""
    return min(capped_losses(final_losses, init_loss).values())


def lr_sensitivity(final_losses: Mapping[float, float | None], init_loss: float) -> float:
    """Wortsman et al.'s LR sensitivity of one method from ``{peak LR: final eval loss}``."""
    capped = capped_losses(final_losses, init_loss)
    best = min(capped.values())
    return sum(loss - best for loss in capped.values()) / len(capped)
