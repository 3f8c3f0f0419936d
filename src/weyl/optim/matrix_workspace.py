"""The batched (accelerator) path of σ̂₁: persistent chunked storage and Lanczos over all matrices.

Launch count, not arithmetic, bounds an optimizer step on a GPU (issue 17: 325 kernel launches per
AdamW² step at GPT-2-S, most of them per tensor or per shape). Here the number of kernels per step
depends on the number of *column counts* among the matrices (2 for a GPT), not on their number:

- :class:`MatrixWorkspace` stores every matrix of one column count and dtype as a run of row
  chunks of one ``(chunks, chunk_rows, cols)`` buffer (zero rows pad a matrix to whole chunks) and
  every vector in one flat buffer. A slot's view has the tensor's own shape and is contiguous, so
  ``torch._foreach_*`` ops write into it directly (AdamW² forms ΔW there: no stacking, no copy).
- :func:`workspace_lanczos` runs Golub–Kahan–Lanczos on all matrices at once: per step and column
  group one gather of the start vectors, one ``bmm`` for ``Mv``, one for ``Mᵀp`` and one for
  ``‖p‖²`` per chunk, and two ``addmm`` with a 0/1 matrix that sum the chunks of each matrix
  (deterministic, unlike atomics); the recurrence then runs on one ``(matrices, max_cols)`` tensor.
  It does the maths of :func:`weyl.optim.spectral_norm._lanczos` (same recurrence, breakdown
  rule and Ritz vector), in a different summation order.

No value is read back to the host: the chunk layout (indices, 0/1 matrices) depends on shapes only
and is built once per set of shapes (cached), matrices with fewer Lanczos steps than others are
masked rather than branched on.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from weyl.optim.spectral_norm import _BREAKDOWN, _TINY, _top_right_vector, matrix_shape

# Chunks are as tall as the gcd of a group's row counts when that is at least this (no padding:
# GPT-2's 50304, 1024 and multiples of 128 give 128); otherwise rows pad to chunks of _PAD_ROWS.
_MIN_GCD_ROWS = 32
_PAD_ROWS = 128


@dataclass(frozen=True, eq=False)  # cache keys by identity (it holds tensors)
class _ColumnGroup:
    """Matrices of one column count and dtype: their chunks, in slot order."""

    cols: int
    chunk_rows: int
    dtype: torch.dtype
    slots: tuple[int, ...]
    starts: tuple[int, ...]  # first chunk of each slot, then the total
    row0: int  # first row of the group in the stacked vectors of all matrices
    owner: Tensor  # (chunks,) int64: the group-local matrix of each chunk
    assign: Tensor  # (matrices, chunks) 0/1: sums each matrix's chunks


@dataclass(frozen=True, eq=False)
class _VectorGroup:
    """Vectors of one dtype, back to back in one flat buffer."""

    dtype: torch.dtype
    slots: tuple[int, ...]
    offsets: tuple[int, ...]  # start of each slot, then the total


@dataclass(frozen=True)
class _Layout:
    shapes: tuple[torch.Size, ...]
    groups: tuple[_ColumnGroup, ...]
    vector_groups: tuple[_VectorGroup, ...]
    rows: tuple[int, ...]  # matrix slots in stacked-row order
    max_cols: int
    empty: tuple[int, ...]  # matrices with no elements


def _chunk_rows(rows: Sequence[int]) -> int:
    positive = [r for r in rows if r > 0]
    if not positive:
        return 1
    g = math.gcd(*positive)
    return g if g >= _MIN_GCD_ROWS else min(max(positive), _PAD_ROWS)


@functools.lru_cache(maxsize=64)
def _layout(
    shapes: tuple[torch.Size, ...], dtypes: tuple[torch.dtype, ...], device: torch.device
) -> _Layout:
    """The chunk layout of these shapes; its index tensors are made on ``device`` once."""
    by_cols: dict[tuple[int, torch.dtype], list[int]] = {}
    by_dtype: dict[torch.dtype, list[int]] = {}
    empty: list[int] = []
    for i, (s, dt) in enumerate(zip(shapes, dtypes)):
        ms = matrix_shape(s)
        if ms is None:
            by_dtype.setdefault(dt, []).append(i)
        elif math.prod(ms) == 0:
            empty.append(i)  # σ₁ = 0; no storage, no chunks
        else:
            by_cols.setdefault((ms[1], dt), []).append(i)
    groups = []
    row_order: list[int] = []
    for (cols, dt), slots in by_cols.items():
        rows = [matrix_shape(shapes[i])[0] for i in slots]
        r = _chunk_rows(rows)
        counts = [-(-n // r) for n in rows]
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        owner = torch.repeat_interleave(torch.arange(len(slots)), torch.tensor(counts))
        assign = torch.zeros(len(slots), starts[-1])
        assign[owner, torch.arange(starts[-1])] = 1.0
        groups.append(
            _ColumnGroup(
                cols,
                r,
                dt,
                tuple(slots),
                tuple(starts),
                len(row_order),
                owner.to(device),
                assign.to(device),
            )
        )
        row_order.extend(slots)
    vector_groups = []
    for dt, slots in by_dtype.items():
        offsets = [0]
        for i in slots:
            offsets.append(offsets[-1] + math.prod(shapes[i]))
        vector_groups.append(_VectorGroup(dt, tuple(slots), tuple(offsets)))
    max_cols = max((g.cols for g in groups), default=0)
    return _Layout(
        shapes, tuple(groups), tuple(vector_groups), tuple(row_order), max_cols, tuple(empty)
    )


class MatrixWorkspace:
    """Persistent storage for tensors of fixed shapes on one device, laid out for batched Lanczos.

    ``views[i]`` is slot ``i``'s storage in its own shape (contiguous). Matrices (by the matrix-view
    rule of :mod:`weyl.optim.spectral_norm`) live as row chunks of one buffer per column count and
    dtype, vectors in one flat buffer per dtype. Padding rows are zero and stay zero: nothing but
    the views is ever written.
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        dtypes: Sequence[torch.dtype],
        device: torch.device | str,
    ) -> None:
        device = torch.device(device)
        self.layout = _layout(tuple(torch.Size(s) for s in shapes), tuple(dtypes), device)
        self.device = device
        self.views: list[Tensor] = [
            torch.empty(s, dtype=dt, device=device) for s, dt in zip(self.layout.shapes, dtypes)
        ]
        self.buffers: list[Tensor] = []
        for g in self.layout.groups:
            buf = torch.zeros(g.starts[-1], g.chunk_rows, g.cols, dtype=g.dtype, device=device)
            self.buffers.append(buf)
            flat = buf.view(-1, g.cols)
            for k, i in enumerate(g.slots):
                rows = matrix_shape(self.layout.shapes[i])[0]
                first = g.starts[k] * g.chunk_rows
                self.views[i] = flat[first : first + rows].view(self.layout.shapes[i])
        self.flats: list[Tensor] = []
        for vg in self.layout.vector_groups:
            flat = torch.zeros(vg.offsets[-1], dtype=vg.dtype, device=device)
            self.flats.append(flat)
            for k, i in enumerate(vg.slots):
                a, b = vg.offsets[k], vg.offsets[k + 1]
                self.views[i] = flat[a:b].view(self.layout.shapes[i])

    def signature(self) -> tuple:
        """What a workspace is built from: equal signatures mean interchangeable layouts."""
        return (self.layout.shapes, tuple(v.dtype for v in self.views), self.device)

    def holds(self, tensors: Sequence[Tensor]) -> bool:
        """Whether ``tensors`` are this workspace's views, in slot order (so no copy is needed)."""
        return len(tensors) == len(self.views) and all(
            t.data_ptr() == v.data_ptr() and t.shape == v.shape for t, v in zip(tensors, self.views)
        )

    def lerp_halves(self, weight: Tensor) -> None:
        """For a workspace of slots ``[U_0..U_{n-1}, W_0..W_{n-1}]`` (same shapes twice):
        ``W_i ← W_i + weight[i]·(U_i − W_i)``, one kernel per buffer (per-tensor factors on the
        device: a foreach op would need them on the host). The factors take the buffer's dtype
        (lerp's rule): for bf16 parameters they are rounded to bf16."""
        self._pairwise(weight, lambda w, u, f: w.lerp_(u, f))

    def sub_scaled_halves(self, weight: Tensor) -> None:
        """As :meth:`lerp_halves`, ``W_i ← W_i − weight[i]·U_i``."""
        self._pairwise(weight, lambda w, u, f: w.addcmul_(u, f, value=-1))

    def scale_second_half(self, weight: Tensor) -> None:
        """As :meth:`lerp_halves`, ``W_i ← weight[i]·W_i``."""
        self._pairwise(weight, lambda w, u, f: w.mul_(f))

    def _pairwise(self, weight: Tensor, op) -> None:
        for g, buf in zip(self.layout.groups, self.buffers):
            half = len(g.slots) // 2
            chunks = g.starts[half]
            params = _param_index(g, weight.device)
            factor = weight.index_select(0, params).to(buf.dtype)
            op(buf[chunks:], buf[:chunks], factor[:, None, None])
        for vg, flat in zip(self.layout.vector_groups, self.flats):
            half = len(vg.slots) // 2
            mid = vg.offsets[half]
            owner = _element_owner(vg, weight.device)
            op(flat[mid:], flat[:mid], weight.index_select(0, owner).to(flat.dtype))


@functools.lru_cache(maxsize=256)
def _param_index(g: _ColumnGroup, device: torch.device) -> Tensor:
    """For the first half of a group's chunks (the U slots): the parameter index of each chunk."""
    half = len(g.slots) // 2
    index = [g.slots[k] for k in range(half) for _ in range(g.starts[k + 1] - g.starts[k])]
    return torch.tensor(index, dtype=torch.long, device=device)


@functools.lru_cache(maxsize=256)
def _element_owner(vg: _VectorGroup, device: torch.device) -> Tensor:
    """For the first half of a vector group (the U slots): the parameter index of each element."""
    half = len(vg.slots) // 2
    sizes = [vg.offsets[k + 1] - vg.offsets[k] for k in range(half)]
    params = torch.tensor(vg.slots[:half])
    return torch.repeat_interleave(params, torch.tensor(sizes, dtype=torch.long)).to(device)


def workspace_norms(ws: MatrixWorkspace, out: Tensor) -> None:
    """L2 norms (fp32) of the vector slots into ``out[slot]``: one foreach kernel per dtype."""
    for vg in ws.layout.vector_groups:
        views = [ws.views[i].reshape(-1) for i in vg.slots]
        if vg.dtype == torch.float64:  # the fp32 accumulation below refuses a narrowing input
            views = [v.float() for v in views]
        norms = torch._foreach_norm(views, dtype=torch.float32)
        out[_slot_index(vg.slots, out.device)] = torch.stack(norms)


@functools.lru_cache(maxsize=256)
def _slot_index(slots: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(slots, device=device)


@functools.lru_cache(maxsize=256)
def _inactive_mask(steps: tuple[int, ...], j: int, device: torch.device) -> Tensor | None:
    """``+inf`` for rows done before Lanczos step ``j`` (their α is zeroed), else 0; None if all run."""
    if all(s > j for s in steps):
        return None
    return torch.tensor([0.0 if s > j else math.inf for s in steps], device=device)


def _active_prefix(steps: Sequence[int], j: int) -> int:
    """Rows still running at step ``j`` when they form a prefix (steps non-increasing), else all."""
    if all(a >= b for a, b in itertools.pairwise(steps)):
        return sum(s > j for s in steps)
    return len(steps)


def workspace_lanczos(
    ws: MatrixWorkspace, vectors: Sequence[Tensor | None], steps: Sequence[int], out: Tensor
) -> None:
    """σ̂₁ of every matrix slot into ``out[slot]``; ``vectors[slot]`` (fp32, or None: start from 0,
    giving σ̂ = 0) are replaced by the Ritz vectors. ``steps[slot]`` Lanczos steps each (≥ 1)."""
    lay = ws.layout
    device = out.device
    if lay.empty:
        out[_slot_index(lay.empty, device)] = 0.0
    if not lay.groups:
        return
    rows = lay.rows
    n, cmax = len(rows), lay.max_cols
    row_steps = tuple(steps[i] for i in rows)
    kmax = max(row_steps)
    # vs[j] holds v_j (columns :cmax, zero-padded) and the coefficient β_{j−1}/α_{j−1} (last
    # column) of every matrix; acc holds Σ_chunks Mᵀp and ‖p‖² (last column).
    vs = torch.zeros(kmax + 1, n, cmax + 1, device=device)
    loaded = [(r, vectors[i]) for r, i in enumerate(rows) if vectors[i] is not None]
    if loaded:
        torch._foreach_copy_([vs[0, r, : v.shape[0]] for r, v in loaded], [v for _, v in loaded])
    acc = torch.zeros(n, cmax + 1, device=device)
    bidiag = torch.zeros(n, kmax, kmax + 1, device=device)
    scale = torch.zeros(n, device=device)
    zero = torch.zeros((), device=device)  # where(out=...) takes tensors only
    mats = [b if b.dtype == torch.float32 else b.float() for b in ws.buffers]
    prev: list[Tensor | None] = [None] * len(lay.groups)
    for j in range(kmax):
        for gi, g in enumerate(lay.groups):
            local = row_steps[g.row0 : g.row0 + len(g.slots)]
            active = _active_prefix(local, j)
            chunks = g.starts[active]
            if chunks == 0:
                continue
            start = torch.index_select(vs[j, g.row0 : g.row0 + len(g.slots)], 0, g.owner[:chunks])
            m = mats[gi][:chunks]
            p = torch.bmm(m, start[:, : g.cols, None])
            if j > 0:
                p.addcmul_(start[:, cmax, None, None], prev[gi][:chunks], value=-1)
            prev[gi] = p
            psq = torch.bmm(p.transpose(1, 2), p)
            w = torch.bmm(m.transpose(1, 2), p)
            target = acc[g.row0 : g.row0 + active]
            assign = g.assign[:active, :chunks]
            target[:, : g.cols].addmm_(assign, w.view(chunks, g.cols), beta=0)
            target[:, cmax:].addmm_(assign, psq.view(chunks, 1), beta=0)
        v = vs[j, :, :cmax]
        mask = _inactive_mask(row_steps, j, device)
        threshold = scale * _BREAKDOWN if mask is None else torch.add(mask, scale, alpha=_BREAKDOWN)
        alpha = acc[:, cmax].sqrt()  # a sum of squares: never negative
        # Below _BREAKDOWN of the entries so far: rounding left by cancellation (see _lanczos).
        alpha = torch.where(alpha > threshold, alpha, zero, out=bidiag[:, j, j])
        inv_alpha = torch.nan_to_num(alpha.reciprocal(), posinf=0.0)
        r = torch.addcmul(acc[:, :cmax] * inv_alpha[:, None], alpha[:, None], v, value=-1)
        torch.maximum(scale, alpha, out=scale)
        beta = torch.linalg.vector_norm(r, dim=1)
        beta = torch.where(beta > scale * _BREAKDOWN, beta, zero, out=bidiag[:, j, j + 1])
        inv_beta = torch.nan_to_num(beta.reciprocal(), posinf=0.0)
        torch.mul(r, inv_beta[:, None], out=vs[j + 1, :, :cmax])
        torch.mul(beta, inv_alpha, out=vs[j + 1, :, cmax])
        torch.maximum(scale, beta, out=scale)
    y = _top_right_vector(bidiag)
    sigma = torch.linalg.vector_norm(torch.bmm(bidiag, y.unsqueeze(-1)), dim=(1, 2))
    v_new = torch.bmm(y.unsqueeze(1), vs[:, :, :cmax].transpose(0, 1)).squeeze(1)
    vnorm = torch.linalg.vector_norm(v_new, dim=1, keepdim=True)
    keep = (sigma > 0)[:, None] & (vnorm > 0)  # a zero matrix keeps its vector
    v_final = torch.where(keep, v_new / vnorm.clamp_min(_TINY), vs[0, :, :cmax])
    if loaded:
        torch._foreach_copy_([v for _, v in loaded], [v_final[r, : v.shape[0]] for r, v in loaded])
    out[_slot_index(rows, device)] = sigma
