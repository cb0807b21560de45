"""StepSampler's order over epochs: every epoch is a permutation of the training set, a new one each epoch, fixed by
(seed, epoch) alone (not by the batch size, the start step or the process count), and the processes split each
global batch, so that together they visit every sample of an epoch once."""
import pytest

from dwgn.training.sampler import StepSampler

N = 12


def order(sampler: StepSampler) -> list[int]:
    """The dataset indices in the order the sampler hands them out, step by step."""
    return [index for items in sampler for index, _, _ in items]


def epochs(indices: list[int], n: int = N) -> list[list[int]]:
    return [indices[e * n:(e + 1) * n] for e in range(len(indices) // n)]


def test_each_epoch_is_a_permutation_and_epochs_reshuffle():
    seq = order(StepSampler(n=N, global_batch=4, seed=3, start=0, steps=6 * N // 4))  # 6 epochs
    per_epoch = epochs(seq)
    assert len(per_epoch) == 6
    for e in per_epoch:
        assert sorted(e) == list(range(N))
    assert per_epoch[1] != per_epoch[0]
    assert len({tuple(e) for e in per_epoch}) == 6  # no epoch repeats another (1 in 12! by chance)
    assert per_epoch[0] != list(range(N))  # shuffled, not in dataset order


def test_an_epochs_order_depends_on_the_seed_and_epoch_only():
    seq = order(StepSampler(N, 4, seed=3, start=0, steps=3 * N // 4))
    assert order(StepSampler(N, 4, seed=3, start=0, steps=3 * N // 4)) == seq  # deterministic
    assert order(StepSampler(N, 6, seed=3, start=0, steps=3 * N // 6)) == seq  # another batch size: the same walk
    assert order(StepSampler(N, 3, seed=3, start=0, steps=3 * N // 3)) == seq
    resumed = StepSampler(N, 4, seed=3, start=N // 4 + 1, steps=3 * N // 4)  # resumed inside epoch 1
    assert order(resumed) == seq[(N // 4 + 1) * 4:]
    other = epochs(order(StepSampler(N, 4, seed=4, start=0, steps=3 * N // 4)))
    assert all(a != b for a, b in zip(other, epochs(seq)))  # another seed, other orders


def test_an_epoch_straddling_two_steps_keeps_each_epochs_permutation():
    """N not a multiple of the batch: a step takes the end of one epoch's order and the start of the next."""
    n, batch = 10, 4
    seq = order(StepSampler(n, batch, seed=5, start=0, steps=5))  # 20 positions = 2 epochs
    assert sorted(seq[:n]) == sorted(seq[n:]) == list(range(n)) and seq[:n] != seq[n:]
    assert order(StepSampler(n, 5, seed=5, start=0, steps=4)) == seq


@pytest.mark.parametrize("world", [2, 3, 6])
def test_processes_partition_every_step_and_every_epoch(world):
    batch, steps = 6, 4 * N // 6  # 4 epochs
    one = StepSampler(N, batch, seed=9, start=0, steps=steps)
    ranks = [StepSampler(N, batch, seed=9, start=0, steps=steps, rank=r, world=world) for r in range(world)]
    for step in range(steps):
        parts = [r.items(step) for r in ranks]
        assert all(len(p) == batch // world for p in parts)
        assert [item for p in parts for item in p] == one.items(step)  # rank r holds slice r of the global batch
    per_rank = [order(r) for r in ranks]
    for e in range(4):
        steps_of_epoch = range(e * N // batch, (e + 1) * N // batch)
        seen = [index for r in range(world) for s in steps_of_epoch for index, _, _ in ranks[r].items(s)]
        assert sorted(seen) == list(range(N))  # disjoint, and together the whole set
    assert len({tuple(p) for p in per_rank}) == world  # the ranks do not see the same samples
