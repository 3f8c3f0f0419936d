"""σ₁ of parameter tensors: the matrix-view rule, exact norms, and warm-started Lanczos estimates.

Matrix-view rule — which matrix's largest singular value stands for a tensor of a given shape:

- leading dimensions of size 1 are dropped: a ``(1, N, d)`` position embedding is the ``(N, d)``
  matrix, a ``(1, 1, d)`` cls token is the ``d``-vector;
- one dimension left (LayerNorm γ/β, biases, cls tokens, 0-d scalars): a vector, whose σ₁ is
  its L2 norm (the σ₁ of an ``n×1`` matrix; the paper's Fig. 15 treats norm gains this way);
- two dimensions: the matrix itself (``nn.Linear`` ``(out, in)``, embeddings ``(vocab, d)``,
  timm's relative-position-bias tables ``((2W−1)², heads)``);
- three or more: rows are the first dimension and columns everything else, so conv kernels
  ``(out, in, kh, kw)`` become ``(out, in·kh·kw)``, the map a convolution applies to one patch.

Estimates (:func:`spectral_norm_estimates`): warm-started Golub–Kahan–Lanczos. One right vector
per matrix is kept between calls; ``k`` steps from it (each one product with ``M`` and one with
``Mᵀ``, the cost of one power iteration) give the ``k×(k+1)`` bidiagonal ``B = UᵀMV`` and
``σ̂ = σ₁(B)`` via its top right-singular vector ``y``; ``V y`` is kept for the next call. ``σ̂`` is
a lower bound of σ₁ (up to float rounding) and never below ``k`` power iterations from the same
vector. All math is fp32. AdamW² runs 3 steps on ΔW and 1 on W per step (``optim.power_iters``,
``optim.weight_iters``): on two training trajectories (a char GPT, a ViT on digits) σ̂₁(ΔW) had
0.12% / 0.09% of (step, matrix) pairs below −10% of the exact σ₁ and a 5th percentile of
−0.04% / −0.05%, against 7.5% and −14% for one power iteration and 1.6% / −3% for three; σ̂₁(W)
0.00% / 0.23% and −0.04% / −0.20%. Measurements, step times and alternatives:
``docs/sigma-estimates.md``.

Paths, one recurrence: on the CPU (:func:`_lanczos`) each local matrix is read once per step,
row block by row block of ~256 KiB (``p_b = M_b v − β u_b`` and ``w += M_bᵀ p_b`` while the block
is in L2; no stacking, which would copy every matrix first), and a caller may form each block
just before its first read (``prepare``: AdamW² updates its moments and forms ΔW there); with
several torch threads the matrices are split into two size-balanced shares run on two threads.
On accelerators (:mod:`weyl.optim.matrix_workspace`) every matrix lives as row chunks of one
buffer per column count, and all matrices are iterated at once with ``bmm``: the kernels per step
depend on the number of column counts, not of matrices, and no value is read by the host. A
DTensor sharded on dim 0 (FSDP2 ``fully_shard``, tensor-parallel colwise) holds a block of rows
of its matrix view (also when the leading size-1 dimension is the sharded one: one rank then
holds all rows, the others none), and ``‖p‖²`` and ``Mᵀp`` of *all* matrices of a step are
summed over ranks in one all-reduce per Lanczos step (``#matrices + Σ columns`` floats), with no
gather. Other placements raise.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from weyl.optim.matrix_workspace import MatrixWorkspace

# Row blocks of ~2 MiB fp32: the first step also updates the moments and forms ΔW per block
# (AdamW²), six elementwise ops a block, whose per-call cost small blocks multiply. Measured on
# the benchmark's GPT-2 shapes (1 thread, interleaved with torch AdamW on a loaded machine):
# 64 Ki elements 1.05×, 256 Ki 0.82×, 512 Ki 0.77×, 1 Mi 0.80× torch AdamW's step time. A
# block and its products stay in cache (L2/L3) between the two matrix-vector products.
_CPU_BLOCK_NUMEL = 1 << 19
# Distributed CPU runs (gloo) stack same-shape shards up to this size for the batched path.
_CPU_STACK_MAX_NUMEL = 1 << 16
_TINY = 1e-30
# A Lanczos entry below this share of the largest entry so far is rounding left by cancellation.
_BREAKDOWN = 1e-4
# Squarings of the small Gram matrix for the top Ritz vector: σ̂ within ~1e-4 of σ₁(B).
_RITZ_SQUARINGS = 10
# Tests set this to run the batched (accelerator) path on the CPU.
_FORCE_STACKED = False
_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)


@dataclass(frozen=True)
class ShardLayout:
    """Logical shape of a (possibly sharded) tensor and the process group its rows span."""

    shape: torch.Size
    group: dist.ProcessGroup | None = None


def matrix_shape(shape: Sequence[int]) -> tuple[int, int] | None:
    """``(rows, cols)`` of the matrix view of a tensor of this shape; ``None`` for a vector."""
    return _matrix_shape(tuple(shape))


@functools.lru_cache(maxsize=4096)  # asked for every tensor at every step
def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    if len(dims) <= 1:
        return None
    cols = 1
    for d in dims[1:]:
        cols *= d
    return dims[0], cols


def as_matrix(t: Tensor) -> Tensor:
    """The matrix view of ``t`` by the module's rule (a 1-D tensor for vectors)."""
    ms = matrix_shape(t.shape)
    return t.reshape(-1) if ms is None else t.reshape(-1, ms[1])


def spectral_norm(t: Tensor) -> Tensor:
    """Exact σ₁ (fp32) of ``t`` by the matrix-view rule, via SVD or the L2 norm."""
    m = as_matrix(t.detach()).float()
    if m.ndim == 1:
        return torch.linalg.vector_norm(m)
    return torch.linalg.matrix_norm(m, ord=2)


def shard_layout(t: Tensor) -> ShardLayout:
    """Where the rows of ``t``'s matrix view live: locally, or across a dim-0 shard group."""
    if type(t) in _PLAIN_TENSOR_TYPES:
        return ShardLayout(t.shape)
    from torch.distributed.tensor import DTensor

    if not isinstance(t, DTensor):
        return ShardLayout(t.shape)
    groups = []
    for mesh_dim, placement in enumerate(t.placements):
        if placement.is_shard(0):
            groups.append(t.device_mesh.get_group(mesh_dim))
        elif not placement.is_replicate():
            raise ValueError(
                f"spectral norm of a DTensor with placement {placement}: only Shard(0) and "
                "Replicate are supported; shard parameters on dim 0 (FSDP2 fully_shard)"
            )
    if len(groups) > 1:
        raise ValueError(
            "spectral norm of a DTensor sharded on dim 0 over several mesh dims is not "
            "supported; shard dim 0 over one mesh dim (use HSDP's Replicate × Shard(0))"
        )
    return ShardLayout(t.shape, groups[0] if groups else None)


def local_tensor(t: Tensor) -> Tensor:
    """The local shard of a DTensor (a view sharing storage), or ``t`` itself."""
    if type(t) in _PLAIN_TENSOR_TYPES:  # the common case, without the import machinery
        return t
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def initial_vector(cols: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """Unit fp32 start vector from a private generator: the same on every rank, global RNG untouched."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(cols, generator=gen, dtype=torch.float32)
    return (v / v.norm().clamp_min(_TINY)).to(device)


def vector_seed(key: str) -> int:
    """A stable seed from a text key (Python's ``hash`` of text differs between processes)."""
    return zlib.crc32(key.encode())


def batched_path(device: torch.device) -> bool:
    """Whether tensors on ``device`` take the batched (accelerator) path: off the CPU, or forced."""
    return device.type != "cpu" or _FORCE_STACKED


def spectral_norm_estimates(
    tensors: Sequence[Tensor],
    layouts: Sequence[ShardLayout],
    vectors: Sequence[Tensor | None],
    iters: int | Sequence[int] = 1,
    workspace: MatrixWorkspace | None = None,
    prepare: Callable[[int, int, int], None] | None = None,
) -> Tensor:
    """σ̂₁ (fp32, one per tensor) of local tensors/shards; refines matrix vectors in place.

    ``vectors[i]`` is the fp32 start vector of matrix ``i`` (``None`` for vectors, whose norm
    is exact), replaced by the top Ritz vector. ``iters`` (one for all, or one per tensor) is
    the number of Golub–Kahan–Lanczos steps, each one product with ``M`` and one with ``Mᵀ``.
    All tensors must be on one device. Collectives are issued in list order, so every rank
    must pass the same parameters in the same order. On the batched path (accelerators) the
    tensors are read from ``workspace`` (:mod:`weyl.optim.matrix_workspace`) when they are its
    views, else copied into it (or into a new one): a caller that forms its tensors in a kept
    workspace saves that copy. ``prepare(i, lo, hi)``, if given, is called before rows ``lo:hi``
    of tensor ``i``'s local matrix view (elements, for a vector) are first read, so that a caller
    can form them there: on the CPU path block by block while the block is in cache (AdamW²
    forms ΔW so, saving a pass over it), on the other paths once for every whole tensor first.
    """
    if len(tensors) == 0:
        return torch.empty(0)
    steps = [iters] * len(tensors) if isinstance(iters, int) else list(iters)
    if len(steps) != len(tensors):
        raise ValueError(f"iters: {len(steps)} counts for {len(tensors)} tensors")
    if min(steps) < 1:
        raise ValueError(f"power_iters={min(steps)}: must be ≥ 1")
    device = tensors[0].device
    out = torch.empty(len(tensors), dtype=torch.float32, device=device)
    row_blocks = not batched_path(device) and all(lay.group is None for lay in layouts)
    if prepare is not None and not row_blocks:
        for i, t in enumerate(tensors):
            ms = matrix_shape(t.shape)
            prepare(i, 0, t.numel() if ms is None else ms[0])
        prepare = None
    if batched_path(device) and all(lay.group is None for lay in layouts):
        from weyl.optim.matrix_workspace import (
            MatrixWorkspace,
            workspace_lanczos,
            workspace_norms,
        )

        if workspace is None or not workspace.holds(tensors):
            shapes = [t.shape for t in tensors]
            dtypes = [t.dtype for t in tensors]
            if workspace is None or workspace.signature() != (tuple(shapes), tuple(dtypes), device):
                workspace = MatrixWorkspace(shapes, dtypes, device)
            torch._foreach_copy_(workspace.views, list(tensors))
        workspace_norms(workspace, out)
        workspace_lanczos(workspace, vectors, steps, out)
        return out
    by_group: dict[int, list[int]] = defaultdict(list)
    groups: dict[int, dist.ProcessGroup | None] = {}
    for i, lay in enumerate(layouts):
        key = id(lay.group) if lay.group is not None else 0
        by_group[key].append(i)
        groups[key] = lay.group
    for key, idx in by_group.items():
        _estimate(tensors, layouts, vectors, idx, steps, groups[key], out, prepare)
    return out


class _Bucket:
    """Matrices iterated together: their start vectors stacked ``(n, cols)``, one step count.

    ``product(v, coef)`` returns ``(‖p‖², Mᵀp)`` for ``p = M v − coef·p_prev`` (local sums,
    before any all-reduce) and keeps ``p`` for the next call. ``Mᵀp`` is taken of the formed
    ``p``: applying the recurrence term after the products instead (``MᵀMv − coef·Mᵀp_prev``)
    saves an operation per row block but lost the clip's accuracy in the optimizer tests (lr_eff
    up to 4% off exact Algorithm 1 on full-batch runs), since ``MᵀMv`` carries rounding of
    ``σ₁²`` size.
    """

    def __init__(self, members: list[int], v0: Tensor, steps: int) -> None:
        self.members = members
        self.v0 = v0
        self.steps = steps

    def product(self, v: Tensor, coef: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class _StackedBucket(_Bucket):
    """Same-shape local matrices as one ``(n, rows, cols)`` fp32 batch: two ``bmm`` a step."""

    def __init__(self, members: list[int], v0: Tensor, steps: int, mats: Tensor) -> None:
        super().__init__(members, v0, steps)
        self.mats = mats
        self.p: Tensor | None = None

    def product(self, v: Tensor, coef: Tensor | None) -> tuple[Tensor, Tensor]:
        p = torch.bmm(self.mats, v.unsqueeze(-1)).squeeze(-1)
        if coef is not None:
            p = p - coef[:, None] * self.p
        self.p = p
        w = torch.bmm(self.mats.transpose(1, 2), p.unsqueeze(-1)).squeeze(-1)
        return p.square().sum(dim=1), w


class _RowBlockBucket(_Bucket):
    """Local CPU matrices of one column count, each read once per step in L2-sized row blocks.

    Per block ``p_b = M_b v − coef·p_prev,b`` and ``w += M_bᵀ p_b`` run while the block is in
    cache, so ``Mᵀp`` costs one read of ``M``. No stacking: copying every matrix into a batch
    would cost more than the products (measured 3.7× slower for a small GPT's 36 matrices).
    ``prepare(i, lo, hi)``, if given, writes rows ``lo:hi`` of matrix ``i`` just before the first
    step reads them, so a caller can form the matrix there while its block is in cache.

    A step runs as :meth:`begin`, :meth:`run` over the matrices (in any split, from several
    threads: each matrix writes only its own row of ``w`` and its own ``p``), :meth:`finish`.
    """

    def __init__(
        self,
        members: list[int],
        v0: Tensor,
        steps: int,
        mats: list[Tensor],
        prepare: Callable[[int, int, int], None] | None = None,
    ) -> None:
        super().__init__(members, v0, steps)
        self.mats = mats
        self.p: list[Tensor] = []
        self.prepare = prepare
        self._step: tuple[Tensor, Tensor, list[float], list[Tensor | None]] | None = None

    def product(self, v: Tensor, coef: Tensor | None) -> tuple[Tensor, Tensor]:
        self.begin(v, coef)
        self.run(range(len(self.mats)))
        return self.finish()

    def begin(self, v: Tensor, coef: Tensor | None) -> None:
        coefs = coef.tolist() if coef is not None else [0.0] * len(self.mats)
        self._step = (v, torch.zeros_like(v), coefs, [None] * len(self.mats))

    def run(self, indices: Iterable[int]) -> None:
        v, w, coefs, ps = self._step
        first = not self.p
        for j in indices:
            m, vj, wj = self.mats[j], v[j], w[j]
            prepare = self.prepare if first else None
            member = self.members[j]
            rows = max(1, _CPU_BLOCK_NUMEL // max(1, m.shape[1]))
            c = coefs[j]
            prev = self.p[j] if c != 0.0 else None
            if m.shape[0] <= rows:
                if prepare is not None:
                    prepare(member, 0, m.shape[0])
                b = m if m.dtype == torch.float32 else m.float()
                p = torch.mv(b, vj)
                if prev is not None:
                    p.sub_(prev, alpha=c)
                wj.addmv_(b.t(), p)
            else:
                p = torch.empty(m.shape[0], dtype=torch.float32)
                prevs = prev.split(rows) if prev is not None else [None] * len(p.split(rows))
                for lo, b, pb, qb in zip(
                    range(0, m.shape[0], rows), m.split(rows), p.split(rows), prevs
                ):
                    if prepare is not None:
                        prepare(member, lo, lo + b.shape[0])
                    b = b if b.dtype == torch.float32 else b.float()
                    torch.mv(b, vj, out=pb)
                    if qb is not None:
                        pb.sub_(qb, alpha=c)
                    wj.addmv_(b.t(), pb)
            ps[j] = p

    def finish(self) -> tuple[Tensor, Tensor]:
        _, w, _, ps = self._step
        self.p = ps
        self._step = None
        return torch.stack(torch._foreach_norm(ps)).square(), w


# A second thread for the row-block products when torch has several intra-op threads: the
# products are too small for torch's own parallelism (measured: no faster on 2 threads), so the
# matrices are split into two size-balanced shares, each run single-threaded.
_HELPER: concurrent.futures.ThreadPoolExecutor | None = None
_HELPER_PID = 0  # a forked child has the executor but not its thread: it makes its own
# Below this many elements per step a second thread costs more than it saves.
_MIN_THREADED_NUMEL = 1 << 20


def _split_shares(buckets: Sequence[_RowBlockBucket]) -> tuple[list, list]:
    """Two lists of (bucket, matrix) of about equal size (largest first, to the lighter share)."""
    items = sorted(
        ((b.mats[j].numel(), bi, j) for bi, b in enumerate(buckets) for j in range(len(b.mats))),
        reverse=True,
    )
    shares: tuple[list, list] = ([], [])
    load = [0, 0]
    for size, bi, j in items:
        k = 0 if load[0] <= load[1] else 1
        shares[k].append((buckets[bi], j))
        load[k] += size
    return shares


def _run_share(share: list) -> None:
    by_bucket: dict[int, tuple[_RowBlockBucket, list[int]]] = {}
    for b, j in share:
        by_bucket.setdefault(id(b), (b, []))[1].append(j)
    for b, js in by_bucket.values():
        b.run(js)


def _row_block_products(
    buckets: Sequence[_RowBlockBucket], vs: Sequence[Tensor], coefs: Sequence[Tensor | None]
) -> list[tuple[Tensor, Tensor]]:
    """One Lanczos step's products of row-block buckets, on two threads when torch has several."""
    global _HELPER, _HELPER_PID
    threads = torch.get_num_threads()
    total = sum(m.numel() for b in buckets for m in b.mats)
    for b, v, c in zip(buckets, vs, coefs):
        b.begin(v, c)
    if threads < 2 or total < _MIN_THREADED_NUMEL:
        for b in buckets:
            b.run(range(len(b.mats)))
        return [b.finish() for b in buckets]
    if _HELPER is None or os.getpid() != _HELPER_PID:
        _HELPER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="weyl-lanczos")
        _HELPER_PID = os.getpid()
    mine, theirs = _split_shares(buckets)
    grad = torch.is_grad_enabled()

    def helper() -> None:
        with torch.set_grad_enabled(grad):
            _run_share(theirs)

    # Each share runs single-threaded (MKL and OpenMP would otherwise split every small product
    # over both cores and the two shares would contend); restored before returning.
    torch.set_num_threads(1)
    try:
        future = _HELPER.submit(helper)
        _run_share(mine)
        future.result()
    finally:
        torch.set_num_threads(threads)
    return [b.finish() for b in buckets]


def _estimate(
    tensors: Sequence[Tensor],
    layouts: Sequence[ShardLayout],
    vectors: Sequence[Tensor | None],
    idx: list[int],
    steps: list[int],
    group: dist.ProcessGroup | None,
    out: Tensor,
    prepare: Callable[[int, int, int], None] | None = None,
) -> None:
    vec_idx = [i for i in idx if matrix_shape(layouts[i].shape) is None]
    mat_idx = [i for i in idx if matrix_shape(layouts[i].shape) is not None]
    if vec_idx:
        if prepare is not None:
            for i in vec_idx:
                prepare(i, 0, tensors[i].numel())
        flat = [tensors[i].reshape(-1) for i in vec_idx]
        norms = torch.stack(torch._foreach_norm(flat, dtype=torch.float32))
        if group is not None:
            sq = norms.square()
            dist.all_reduce(sq, group=group)
            norms = sq.sqrt()
        out[vec_idx] = norms
    if not mat_idx:
        return
    cols = {i: matrix_shape(layouts[i].shape)[1] for i in mat_idx}
    local = {i: tensors[i].reshape(-1, cols[i]) for i in mat_idx}
    buckets: list[_Bucket] = []
    if group is None and out.device.type == "cpu" and not _FORCE_STACKED:
        by_cols: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in mat_idx:
            by_cols[(cols[i], steps[i])].append(i)
        for (_, k), members in by_cols.items():
            v0 = torch.stack([vectors[i] for i in members])
            mats = [local[i] for i in members]
            buckets.append(_RowBlockBucket(members, v0, k, mats, prepare))
    else:
        # Bucket by local shape: uneven shards can put the same parameter in different buckets
        # on different ranks, so the all-reduce below is assembled in parameter order.
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for i in mat_idx:
            m = local[i]
            stack = m.device.type != "cpu" or m.numel() <= _CPU_STACK_MAX_NUMEL
            by_shape[(tuple(m.shape), m.dtype, steps[i], i if not stack else -1)].append(i)
        for (_, _, k, _), members in by_shape.items():
            views = [local[i] for i in members]
            mats = torch.stack(views) if len(views) > 1 else views[0].unsqueeze(0)
            v0 = torch.stack([vectors[i] for i in members])
            buckets.append(_StackedBucket(members, v0, k, mats.float()))
    sigma = _lanczos(buckets, mat_idx, group)
    for b, s in zip(buckets, sigma):
        out[b.members] = s
        torch._foreach_copy_([vectors[i] for i in b.members], list(b.v0.unbind(0)))


def _lanczos(
    buckets: Sequence[_Bucket], order: list[int], group: dist.ProcessGroup | None
) -> list[Tensor]:
    """Golub–Kahan–Lanczos on every bucket in lock step; σ̂₁ per bucket, ``v0`` ← Ritz vector.

    Step ``j``: ``p = M v_j − β_{j−1} u_{j−1}``, ``α_j = ‖p‖``, ``u_j = p/α_j``,
    ``r = Mᵀu_j − α_j v_j``, ``β_j = ‖r‖``, ``v_{j+1} = r/β_j``. After ``k`` steps
    ``Uᵀ M V = B``, the ``k×(k+1)`` upper-bidiagonal matrix of the α and β; ``σ̂ = ‖B y‖`` for its
    top right-singular vector ``y`` (a lower bound of σ₁ for any unit ``y``, ≥ the power
    iteration's estimate from the same products), and the next start vector is ``V y``. Under a
    row shard group one all-reduce per step carries every bucket's ``‖p‖²`` and ``Mᵀp``.
    """
    state = []
    for b in buckets:
        n, k = b.v0.shape[0], b.steps
        zeros = b.v0.new_zeros(n)
        bidiag = b.v0.new_zeros(n, k, k + 1)
        state.append({"v": [b.v0], "coef": None, "scale": zeros, "bidiag": bidiag})
    for j in range(max(b.steps for b in buckets)):
        active = [(b, st) for b, st in zip(buckets, state) if j < b.steps]
        if all(isinstance(b, _RowBlockBucket) for b, _ in active):
            results = _row_block_products(
                [b for b, _ in active],
                [st["v"][-1] for _, st in active],
                [st["coef"] for _, st in active],
            )
        else:
            results = [b.product(st["v"][-1], st["coef"]) for b, st in active]
        if group is not None:
            results = _all_reduce_products([b for b, _ in active], results, order, group)
        for (_, st), (psq, w) in zip(active, results):
            v = st["v"][-1]
            # Cancellation in p (or r) below this share of the entries so far is rounding, not a
            # direction: it counts as breakdown (an invariant subspace), and the step ends there.
            alpha = psq.clamp_min(0).sqrt()
            alpha = torch.where(alpha > _BREAKDOWN * st["scale"], alpha, 0.0)
            inv_alpha = torch.where(alpha > 0, 1 / alpha.clamp_min(_TINY), 0.0)
            r = w * inv_alpha[:, None] - alpha[:, None] * v
            scale = torch.maximum(st["scale"], alpha)
            beta = torch.linalg.vector_norm(r, dim=1)
            beta = torch.where(beta > _BREAKDOWN * scale, beta, 0.0)
            st["v"].append(r * torch.where(beta > 0, 1 / beta.clamp_min(_TINY), 0.0)[:, None])
            st["coef"] = beta * inv_alpha
            st["scale"] = torch.maximum(scale, beta)
            st["bidiag"][:, j, j] = alpha
            st["bidiag"][:, j, j + 1] = beta
    sigmas = []
    for b, st in zip(buckets, state):
        y = _top_right_vector(st["bidiag"])
        sigma = torch.linalg.vector_norm(torch.bmm(st["bidiag"], y.unsqueeze(-1)), dim=(1, 2))
        v_new = torch.einsum("jnc,nj->nc", torch.stack(st["v"]), y)
        vnorm = torch.linalg.vector_norm(v_new, dim=1, keepdim=True)
        # A zero matrix has no direction to follow: it keeps its vector.
        keep = (sigma > 0)[:, None] & (vnorm > 0)
        b.v0.copy_(torch.where(keep, v_new / vnorm.clamp_min(_TINY), b.v0))
        sigmas.append(sigma)
    return sigmas


def _top_right_vector(bidiag: Tensor) -> Tensor:
    """Unit top right-singular vectors ``(n, k+1)`` of small ``(n, k, k+1)`` matrices.

    Repeated squaring of the Gram matrix (``G^(2^s)``) is a batch of tiny products with no host
    synchronisation (``torch.linalg.eigh`` synchronises a GPU); its largest column is the top
    eigenvector up to a share ``(λ₂/λ₁)^(2^s)``, which costs σ̂ at most ~1/(2^(s+1)·e)
    relatively and keeps it a lower bound. The matrix is rescaled to trace 1 before every other
    squaring: two squarings of a trace-1 matrix keep its top eigenvalue above (k+1)⁻⁴, far from
    underflow, at half the kernels of rescaling after each.
    """
    if bidiag.shape[1] == 1:  # one step: y ∝ (α, β), the power iteration's vector
        y = bidiag[:, 0, :]
    else:
        g = bidiag.transpose(1, 2) @ bidiag
        for s in range(_RITZ_SQUARINGS):
            if s % 2 == 0:
                g = g / g.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(_TINY)[:, None, None]
            g = g @ g
        best = torch.linalg.vector_norm(g, dim=1).argmax(dim=1)
        y = torch.gather(g, 2, best[:, None, None].expand(-1, g.shape[1], 1)).squeeze(-1)
    return y / torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp_min(_TINY)


def _all_reduce_products(
    buckets: Sequence[_Bucket],
    results: list[tuple[Tensor, Tensor]],
    order: list[int],
    group: dist.ProcessGroup,
) -> list[tuple[Tensor, Tensor]]:
    """Sum every bucket's ``(‖p‖², Mᵀp)`` over the ranks in one all-reduce, in parameter order."""
    parts: dict[int, tuple[Tensor, Tensor]] = {}
    for b, (psq, w) in zip(buckets, results):
        for j, i in enumerate(b.members):
            parts[i] = (psq[j : j + 1], w[j])
    present = [i for i in order if i in parts]
    flat = torch.cat([t for i in present for t in parts[i]])
    dist.all_reduce(flat, group=group)
    sizes = [n for i in present for n in (1, parts[i][1].numel())]
    pieces = iter(flat.split(sizes))
    summed = {i: (next(pieces), next(pieces)) for i in present}
    return [
        (
            torch.cat([summed[i][0] for i in b.members]),
            torch.stack([summed[i][1] for i in b.members]),
        )
        for b in buckets
    ]
