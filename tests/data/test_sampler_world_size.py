"""The image sampler's position saved at one world size continues at another, sample for sample."""

import pytest

from weyl.data.epoch_sampler import ShardedEpochSampler

SIZE = 96  # divisible by 1, 2 and 4: no dropped tail, so the epoch is the same at every size


def _next_global(samplers: list[ShardedEpochSampler], per_rank: int) -> list[int]:
    """Indices of the next ``per_rank`` samples of every rank, in global order."""
    taken = [s.take(per_rank) for s in samplers]
    return [taken[r][k][1] for k in range(per_rank) for r in range(len(samplers))]


def _ranks(world: int) -> list[ShardedEpochSampler]:
    return [ShardedEpochSampler(SIZE, rank=r, world_size=world, seed=3) for r in range(world)]


@pytest.mark.parametrize("world", [1, 4])
def test_a_two_rank_position_resumes_at_another_world_size(world):
    reference = [i for _, i in ShardedEpochSampler(SIZE, seed=3).take(SIZE)]
    two = _ranks(2)
    first = _next_global(two, 10)  # 20 samples consumed
    assert first == reference[:20]
    resumed = _ranks(world)
    for s in resumed:
        s.load_state_dict(two[0].state_dict())
    # no sample of the first 20 again, none of the rest of the epoch skipped
    assert _next_global(resumed, (SIZE - 20) // world) == reference[20:]
