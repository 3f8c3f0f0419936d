"""Block sampling from token memmaps: shift-by-one targets, exact resume (also at another world
size), disjoint rank streams in one global order, val pass."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from weyl.data.token_bins import write_token_file
from weyl.data.token_blocks import (
    TokenBlockStream,
    iter_val_blocks,
    probe_blocks,
    stream_seed,
    val_block_starts,
)

N_TOKENS = 5000


@pytest.fixture
def ramp(tmp_path: Path) -> Path:
    """Tokens 0, 1, 2, ...: every block's first token is its own start offset."""
    path = tmp_path / "train.bin"
    write_token_file(path, [np.arange(N_TOKENS)], N_TOKENS)
    return path


def test_blocks_are_contiguous_and_shifted(ramp: Path) -> None:
    x, y = next(TokenBlockStream(ramp, block_size=16, batch_size=8, seed=3))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    for row_x, row_y in zip(x, y):
        start = int(row_x[0])
        assert 0 <= start <= N_TOKENS - 17
        assert torch.equal(row_x, torch.arange(start, start + 16))
        assert torch.equal(row_y, torch.arange(start + 1, start + 17))


def test_exact_resume_through_torch_save(ramp: Path) -> None:
    stream = TokenBlockStream(ramp, block_size=8, batch_size=4, seed=1, rank=0)
    for _ in range(5):
        next(stream)
    buf = io.BytesIO()
    torch.save(stream.state_dict(), buf)
    expected = [next(stream) for _ in range(4)]
    buf.seek(0)
    fresh = TokenBlockStream(ramp, block_size=8, batch_size=4, seed=1, rank=0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for (ex, ey), (gx, gy) in zip(expected, (next(fresh) for _ in range(4))):
        assert torch.equal(ex, gx) and torch.equal(ey, gy)
    assert fresh.batches_served == stream.batches_served == 9


def test_ranks_and_seeds_give_different_streams(ramp: Path) -> None:
    def first(seed: int, rank: int) -> torch.Tensor:
        stream = TokenBlockStream(
            ramp, block_size=8, batch_size=16, seed=seed, rank=rank, world_size=2
        )
        return next(stream)[0][:, 0]

    assert not torch.equal(first(0, 0), first(0, 1))
    assert not torch.equal(first(0, 1), first(1, 0))
    assert torch.equal(first(2, 1), first(2, 1))


def test_val_pass_is_disjoint_across_ranks_and_covers_all_blocks(ramp: Path) -> None:
    block = 64
    n_blocks = (N_TOKENS - 1) // block  # 78, a multiple of 2 and 3
    for world in (2, 3):
        seen = []
        counts = []
        for rank in range(world):
            batches = list(
                iter_val_blocks(ramp, block_size=block, batch_size=5, rank=rank, world_size=world)
            )
            counts.append(len(batches))
            for x, y in batches:
                assert torch.equal(y[:, :-1], x[:, 1:])
                seen += x[:, 0].tolist()
        assert len(set(counts)) == 1  # equal batch counts keep eval collectives matched
        assert sorted(seen) == [i * block for i in range(n_blocks - n_blocks % world)]
    # the order is fixed: two passes agree, and the probe is the head of rank-0-of-1's order
    a = val_block_starts(N_TOKENS, block)
    assert torch.equal(a, val_block_starts(N_TOKENS, block))
    px, _ = probe_blocks(ramp, block_size=block, batch_size=3)
    assert px[:, 0].tolist() == a[:3].tolist()


def test_too_short_for_a_block_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tiny.bin"
    write_token_file(path, [np.arange(10)], 10)
    with pytest.raises(ValueError, match="block_size"):
        TokenBlockStream(path, block_size=10, batch_size=2)


def test_changed_data_refuses_resume(ramp: Path, tmp_path: Path) -> None:
    state = TokenBlockStream(ramp, block_size=8, batch_size=2).state_dict()
    other = tmp_path / "other.bin"
    write_token_file(other, [np.arange(100)], 100)
    with pytest.raises(ValueError, match="changed"):
        TokenBlockStream(other, block_size=8, batch_size=2).load_state_dict(state)


def _update_starts(streams: list[TokenBlockStream], accum: int) -> list[int]:
    """Block starts of one update: ``accum`` micro batches of every rank, as the trainer draws."""
    starts: list[int] = []
    for _ in range(accum):
        for stream in streams:
            starts += next(stream)[0][:, 0].tolist()
    return sorted(starts)


def _ranks(ramp: Path, world: int, batch: int, seed: int = 4) -> list[TokenBlockStream]:
    return [
        TokenBlockStream(ramp, block_size=8, batch_size=batch, seed=seed, rank=r, world_size=world)
        for r in range(world)
    ]


def test_an_update_holds_the_same_samples_at_every_world_size(ramp: Path) -> None:
    # global batch 8: 1 rank x 8, 2 ranks x 4, 4 ranks x 2, and 2 ranks x 2 micro x 2 accum
    one = _ranks(ramp, 1, 8)
    reference = [_update_starts(one, 1) for _ in range(5)]
    for world, batch, accum in ((2, 4, 1), (4, 2, 1), (2, 2, 2)):
        streams = _ranks(ramp, world, batch)
        assert [_update_starts(streams, accum) for _ in range(5)] == reference, (world, accum)
    # the samples of different updates are different draws (not one block repeated)
    assert len({tuple(u) for u in reference}) == 5


def test_a_position_saved_at_two_ranks_resumes_at_four_and_at_one(ramp: Path) -> None:
    one = _ranks(ramp, 1, 8)
    reference = [_update_starts(one, 1) for _ in range(6)]
    two = _ranks(ramp, 2, 4)
    for _ in range(3):
        _update_starts(two, 1)
    state = torch.load(_saved(two[0].state_dict()), weights_only=True)
    assert state["samples"] == 24  # 3 updates of 8, counted over both ranks
    for world, batch in ((4, 2), (1, 8)):
        streams = _ranks(ramp, world, batch)
        for s in streams:
            s.load_state_dict(state)
        # no sample of updates 1-3 again, none of 4-6 skipped
        assert [_update_starts(streams, 1) for _ in range(3)] == reference[3:], world
    # 24 samples are no whole number of batches of 5: refused, not silently shifted
    bad = TokenBlockStream(ramp, block_size=8, batch_size=5, rank=0, world_size=1)
    with pytest.raises(ValueError, match="global_batch_size"):
        bad.load_state_dict(state)


def _saved(state: dict) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_one_rank_draws_nanogpt_get_batch_from_the_seeded_generator(ramp: Path) -> None:
    # nanoGPT's get_batch: torch.randint(len(data) - block_size, (batch,)) per batch, here from
    # one generator seeded as weyl seeded rank 0's stream before the global order existed.
    stream = TokenBlockStream(ramp, block_size=8, batch_size=4, seed=9)
    reference = torch.Generator().manual_seed(stream_seed(9, 0))
    for _ in range(6):
        expected = torch.randint(N_TOKENS - 8, (4,), generator=reference)
        assert torch.equal(next(stream)[0][:, 0], expected)


def test_resume_without_the_generator_state_replays_to_the_same_position(ramp: Path) -> None:
    two = _ranks(ramp, 2, 4)
    for _ in range(3):
        _update_starts(two, 1)
    state = two[1].state_dict()
    bare = {k: v for k, v in state.items() if k not in ("generator", "drawn")}
    following = _update_starts(two, 1)
    for saved in (state, bare):
        streams = _ranks(ramp, 2, 4)
        for s in streams:
            s.load_state_dict(saved)
        assert _update_starts(streams, 1) == following


def test_a_checkpoint_from_before_the_global_order_continues_exactly_at_one_rank(
    ramp: Path,
) -> None:
    # the old per-rank format: {generator, batches_served, seed, rank, num_tokens}
    gen = torch.Generator().manual_seed(stream_seed(2, 0))
    for _ in range(3):
        torch.randint(N_TOKENS - 8, (4,), generator=gen)
    old = {"generator": gen.get_state(), "batches_served": 3, "seed": 2, "rank": 0}
    old["num_tokens"] = N_TOKENS
    stream = TokenBlockStream(ramp, block_size=8, batch_size=4, seed=2)
    stream.load_state_dict(old)
    assert torch.equal(next(stream)[0][:, 0], torch.randint(N_TOKENS - 8, (4,), generator=gen))
