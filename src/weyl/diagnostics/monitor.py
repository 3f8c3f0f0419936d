"""The diagnostics a training run logs every N steps, as one flat ``dict[str, float]``.

``Lxx`` is the attention view's layer name (``L03``), ``hNN`` the head (``h05``), ``{s}``
each value of ``DiagnosticsConfig.sec_s`` not above the layer's head dimension.

Weights (:func:`spectral_report` gives these alone, no data needed):

    attn/Lxx/hNN/qk_sigma1     σ₁(W_qᵀW_k) of head NN (per-head keys only with per_head=True)
    attn/Lxx/hNN/sec_s{s}      SEC(d_q, s) of head NN's W_qᵀW_k (Eq. 4)
    attn/Lxx/hNN/ov_sigma1     σ₁(W_oW_v) of head NN
    attn/Lxx/qk_sigma1_max, attn/Lxx/qk_sigma1_mean     over heads
    attn/Lxx/sec_s{s}_max, attn/Lxx/sec_s{s}_mean       over heads
    attn/Lxx/ov_sigma1_max
    attn/qk_sigma1_max                                   over all layers
    terms/Lxx/{wq,wk,wv,wo,w1,w2}_sigma1, terms/Lxx/{gamma,beta}{1,2}_norm,
    terms/Lxx/{qk,ov,ffn}_sigma1                         Fig. 1 weight terms (layer-level)
    collapse/any_concentrated   1 if any head has SEC(d_q, s*) ≥ sec_concentrated (early warning)

Probe batch (:class:`Diagnostics` only):

    attn/Lxx/hNN/entropy, attn/Lxx/hNN/erank, attn/Lxx/hNN/collapse   per head
    attn/Lxx/entropy_min, attn/Lxx/entropy_mean, attn/Lxx/erank_min, attn/Lxx/erank_mean
    attn/entropy_min                                     over all layers
    terms/Lxx/x_norm, terms/Lxx/grad_x_norm (the latter only with a loss_fn)
    collapse/Lxx                0 normal, 1 benign, 2 malignant (worst head of the layer)
    collapse/Lxx/malignant_heads, collapse/Lxx/benign_heads   head counts
    collapse/any_malignant      1 if any layer is malignant
    collapse/first_malignant_layer   index of the shallowest malignant layer, -1 if none
    collapse/malignant_layers   number of malignant layers

Optimizer (only when it has ``lr_report``, see :mod:`weyl.diagnostics.optimizer_view`):

    lr/Lxx/{scheduled_mean, effective_mean, effective_min, clip_rate}, lr/other/..., lr/...

    (Fig. 15's per-tensor ``lr/Lxx/<tensor>`` and ``clip/Lxx/<tensor>`` are not computed here:
    the trainer logs them every ``diagnostics.lr_every`` steps through
    :class:`weyl.diagnostics.optimizer_view.TensorLRView`.)

Entropy is in nats (mean over query rows and probe maps); erank is the Roy–Vetterli
effective rank (:mod:`weyl.diagnostics.attention_maps`), averaged over at most
``rank_samples`` probe maps per layer, each measured on ``rank_queries`` of its query rows
(:func:`~weyl.diagnostics.attention_maps.sampled_effective_rank`) to bound the cost.

Every tensor stays on the model's device (:meth:`Diagnostics.compute_tensors`); the host
reads all values in one transfer at the end (:func:`host_floats`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from weyl.diagnostics.attention_maps import attention_entropy, sampled_effective_rank
from weyl.diagnostics.collapse import AttentionMode, CollapseThresholds, classify_heads
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.diagnostics.optimizer_view import layer_lr_stats
from weyl.diagnostics.spectral import ov_singular_values, qk_singular_values, sec_index
from weyl.diagnostics.terms import (
    input_grad_norm_tensors,
    record_block_inputs,
    rms_token_norm_tensor,
    weight_term_tensors,
)
from weyl.models.attention_view import (
    AttentionLayerView,
    attention_views,
    capture_attention,
    viewed_model,
)

DEFAULT_SEC_S = (1, 2, 4, 8)
LossFn = Callable[[nn.Module], Tensor]


def host_floats(values: dict[str, Tensor]) -> dict[str, float]:
    """0-dim tensors (all on one device) → floats, in one device-to-host transfer."""
    if not values:
        return {}
    flat = torch.stack([v.detach().reshape(()).double() for v in values.values()]).tolist()
    return dict(zip(values, flat, strict=True))


def _check_sec_s(sec_s: Sequence[int]) -> tuple[int, ...]:
    values = tuple(sec_s)
    if not values or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in values):
        raise ValueError(
            f"diagnostics.sec_s must be a non-empty list of integers >= 1; got {sec_s}"
        )
    return tuple(sorted(set(values)))


@torch.no_grad()
def _head_spectra(
    views: list[AttentionLayerView],
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per layer: (σ(W_qᵀW_k) per head (H, d_q), σ₁(W_oW_v) per head (H,)).

    Layers of equal shape are stacked so the QR/SVD route runs batched over layers too.
    """
    groups: dict[tuple[int, ...], list[AttentionLayerView]] = {}
    for v in views:
        groups.setdefault(tuple(v.q_weight().shape), []).append(v)
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for group in groups.values():
        q = torch.stack([v.q_weight().detach() for v in group])
        k = torch.stack([v.k_weight().detach() for v in group])
        o = torch.stack([v.o_weight().detach() for v in group])
        val = torch.stack([v.v_weight().detach() for v in group])
        qk = qk_singular_values(q, k)
        ov = ov_singular_values(o, val)[..., 0]
        for i, v in enumerate(group):
            out[v.name] = (qk[i], ov[i])
    return out


def _head_key(view: AttentionLayerView, head: int, stat: str) -> str:
    return f"attn/{view.name}/h{head:02d}/{stat}"


def _spectral_keys(
    views: list[AttentionLayerView],
    sec_s: tuple[int, ...],
    per_head: bool,
    thresholds: CollapseThresholds,
    terms: bool,
) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """Weight-only keys, plus (SEC(d_q, s*), σ₁(W_qᵀW_k)) per head for the collapse rule."""
    out: dict[str, Tensor] = {}
    sec_small: dict[str, tuple[Tensor, Tensor]] = {}
    spectra = _head_spectra(views)
    concentrated: list[Tensor] = []
    for v in views:
        qk, ov = spectra[v.name]
        layer = f"attn/{v.name}"
        sigma1 = qk[:, 0]
        secs = {s: sec_index(qk, s) for s in sec_s if s <= v.head_dim}
        if per_head:
            for h in range(v.num_heads):
                out[_head_key(v, h, "qk_sigma1")] = sigma1[h]
                for s, sec in secs.items():
                    out[_head_key(v, h, f"sec_s{s}")] = sec[h]
                out[_head_key(v, h, "ov_sigma1")] = ov[h]
        out[f"{layer}/qk_sigma1_max"] = sigma1.max()
        out[f"{layer}/qk_sigma1_mean"] = sigma1.mean()
        for s, sec in secs.items():
            out[f"{layer}/sec_s{s}_max"] = sec.max()
            out[f"{layer}/sec_s{s}_mean"] = sec.mean()
        out[f"{layer}/ov_sigma1_max"] = ov.max()
        sec_star = sec_index(qk, thresholds.sec_rank(v.head_dim))
        sec_small[v.name] = (sec_star, sigma1)
        concentrated.append((sec_star >= thresholds.sec).any())
        if terms:
            for name, value in weight_term_tensors(v).items():
                out[f"terms/{v.name}/{name}"] = value
    if views:
        out["attn/qk_sigma1_max"] = torch.stack(
            [out[f"attn/{v.name}/qk_sigma1_max"] for v in views]
        ).max()
        out["collapse/any_concentrated"] = torch.stack(concentrated).any().float()
    else:
        out["collapse/any_concentrated"] = torch.zeros(())
    return out, sec_small


def spectral_report(
    model: nn.Module, sec_s: Sequence[int] = DEFAULT_SEC_S, per_head: bool = True
) -> dict[str, float]:
    """Weight-only diagnostics of any supported model (no data needed); keys in module doc."""
    views = attention_views(model)
    out, _ = _spectral_keys(views, _check_sec_s(sec_s), per_head, CollapseThresholds(), terms=True)
    return host_floats(out)


@contextlib.contextmanager
def _eval_mode_and_private_rng(model: nn.Module) -> Iterator[None]:
    """Eval mode and a forked RNG: the run's mode and random stream are left as they were."""
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


class Diagnostics:
    """Measures spectra, attention maps, the Fig. 1 terms and the optimizer's LR record.

    ``loss_fn(model) -> scalar`` runs the (unwrapped) model on a probe batch of its own
    choosing and enables ``terms/Lxx/grad_x_norm``; ``x_norm`` is then taken on that same
    pass. Without it ``x_norm`` comes from the ``probe_inputs`` forward. Both passes run in
    eval mode (no dropout) so successive diagnostics are comparable.
    ``per_head=False`` keeps only per-layer summaries (for deep models' dashboards);
    ``rank_samples`` caps the probe maps per layer whose SVDs give the effective rank.
    ``compute`` leaves the model's train/eval mode, every ``.grad`` and the global RNG
    state as it found them.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: DiagnosticsConfig,
        probe_inputs: Tensor | None,
        loss_fn: LossFn | None = None,
        *,
        per_head: bool | None = None,
        rank_samples: int | None = None,
        rank_fraction: float | None = None,
        rank_queries: int | None = None,
    ) -> None:
        # Keyword arguments override the config (for use outside the trainer).
        per_head = cfg.per_head if per_head is None else per_head
        rank_samples = cfg.rank_samples if rank_samples is None else rank_samples
        rank_queries = cfg.rank_queries if rank_queries is None else rank_queries
        if rank_queries < 0:
            raise ValueError(f"rank_queries must be >= 0 (0 = all rows); got {rank_queries}")
        if cfg.every < 1:
            raise ValueError(f"diagnostics.every must be >= 1; got {cfg.every}")
        if rank_samples < 1:
            raise ValueError(f"rank_samples must be >= 1; got {rank_samples}")
        self.model = model
        self.cfg = cfg
        self.sec_s = _check_sec_s(cfg.sec_s)
        extra = {} if rank_fraction is None else {"rank_fraction": rank_fraction}
        self.thresholds = CollapseThresholds(
            entropy=cfg.entropy_collapse,
            sec=cfg.sec_concentrated,
            qk_logit=cfg.qk_logit_large,
            **extra,
        )
        self.probe_inputs = None if probe_inputs is None else probe_inputs.detach().clone()
        self.loss_fn = loss_fn
        self.per_head = per_head
        self.rank_samples = rank_samples
        self.rank_queries = rank_queries
        attention_views(model)  # fail now, not at step N, when the model has no view

    def due(self, step: int) -> bool:
        """Whether the trainer should call :meth:`compute` at ``step``."""
        return self.cfg.enabled and step % self.cfg.every == 0

    def compute(self, optimizer: object | None = None) -> dict[str, float]:
        """All diagnostics as a flat dict (key names in the module docstring)."""
        out = host_floats(self.compute_tensors())
        if optimizer is not None:
            out.update(layer_lr_stats(self.model, optimizer, attention_views(self.model)))
        return out

    def compute_tensors(self) -> dict[str, Tensor]:
        """The model's diagnostics as 0-dim tensors, all on the model's device, no host read."""
        views = attention_views(self.model)
        out, sec_small = _spectral_keys(
            views, self.sec_s, self.per_head, self.thresholds, terms=self.cfg.terms
        )
        maps: dict[str, Tensor] = {}
        if self.probe_inputs is not None or self.loss_fn is not None:
            maps, forward_terms = self._probe(views)
            out.update(forward_terms)
        out.update(self._map_keys(views, maps, sec_small))
        return out

    def _probe(
        self, views: list[AttentionLayerView]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Attention maps on the probe batch and the x / ∂L/∂x terms."""
        inner = viewed_model(self.model)
        maps: dict[str, Tensor] = {}
        terms: dict[str, Tensor] = {}
        want_terms = self.cfg.terms
        with _eval_mode_and_private_rng(self.model):
            if self.probe_inputs is not None:
                batch = self.probe_inputs.to(self._device(inner))
                measure_x = want_terms and self.loss_fn is None
                with (
                    torch.no_grad(),
                    capture_attention(views) as sinks,
                    record_block_inputs(views if measure_x else []) as xs,
                ):
                    self.model(batch)
                maps = {name: torch.cat(m, dim=0) for name, m in sinks.items() if m}
                for name, x in xs.items():
                    if x:
                        terms[f"terms/{name}/x_norm"] = rms_token_norm_tensor(x)
            if self.loss_fn is not None and want_terms:
                with torch.enable_grad(), record_block_inputs(views, for_grad=True) as xs:
                    loss = self.loss_fn(inner)
                if loss.dim() != 0:
                    raise ValueError(
                        f"diagnostics loss_fn must return a scalar; got shape {tuple(loss.shape)}"
                    )
                for name, x in xs.items():
                    if x:
                        terms[f"terms/{name}/x_norm"] = rms_token_norm_tensor(x)
                for name, g in input_grad_norm_tensors(loss, xs).items():
                    terms[f"terms/{name}/grad_x_norm"] = g
        return maps, terms

    @staticmethod
    def _device(module: nn.Module) -> torch.device:
        p = next(module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _map_keys(
        self,
        views: list[AttentionLayerView],
        maps: dict[str, Tensor],
        sec_small: dict[str, tuple[Tensor, Tensor]],
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        worst: list[Tensor] = []
        entropy_mins: list[Tensor] = []
        for v in views:
            entropy = erank = erank_fraction = None
            m = maps.get(v.name)
            if m is not None:
                entropy = attention_entropy(m).mean(0)
                sample = m[: self.rank_samples]
                erank, erank_fraction = sampled_effective_rank(
                    sample, self.rank_queries or sample.shape[-2]
                )
                erank, erank_fraction = erank.mean(0), erank_fraction.mean(0)
                layer = f"attn/{v.name}"
                out[f"{layer}/entropy_min"] = entropy.min()
                out[f"{layer}/entropy_mean"] = entropy.mean()
                out[f"{layer}/erank_min"] = erank.min()
                out[f"{layer}/erank_mean"] = erank.mean()
                entropy_mins.append(entropy.min())
            sec_star, sigma1 = sec_small[v.name]
            labels = classify_heads(
                entropy, erank_fraction, sec_star, sigma1, v.head_dim, self.thresholds
            )
            if self.per_head:
                for h in range(v.num_heads):
                    if entropy is not None and erank is not None:
                        out[_head_key(v, h, "entropy")] = entropy[h]
                        out[_head_key(v, h, "erank")] = erank[h]
                    out[_head_key(v, h, "collapse")] = labels[h]
            worst.append(labels.max())
            out[f"collapse/{v.name}"] = worst[-1]
            out[f"collapse/{v.name}/malignant_heads"] = (labels == AttentionMode.MALIGNANT).sum()
            out[f"collapse/{v.name}/benign_heads"] = (labels == AttentionMode.BENIGN).sum()
        if entropy_mins:
            out["attn/entropy_min"] = torch.stack(entropy_mins).min()
        if views:
            malignant = torch.stack(worst) == AttentionMode.MALIGNANT
            index = torch.tensor([v.index for v in views], device=malignant.device)
            first = torch.where(malignant, index, index.max() + 1).min()
            out["collapse/any_malignant"] = malignant.any()
            out["collapse/first_malignant_layer"] = torch.where(malignant.any(), first, -1)
            out["collapse/malignant_layers"] = malignant.sum()
        else:
            out["collapse/any_malignant"] = torch.zeros(())
            out["collapse/first_malignant_layer"] = torch.full((), -1.0)
            out["collapse/malignant_layers"] = torch.zeros(())
        return out
