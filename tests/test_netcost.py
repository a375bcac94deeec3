"""The α-β cost model and the projection of a run onto a link, against hand-computed values
and against a ring all-reduce carried out message by message."""

from __future__ import annotations

import re

import pytest

from apts.report.netcost import (
    LINKS,
    Link,
    allreduce_time,
    collectives_time,
    project,
)

LINK = Link("test", alpha=1e-5, beta=1e8)


def test_allreduce_cost_by_hand():
    # 2(N-1)α + 2(N-1)/N · b/β with N=4, b=1e6, α=1e-5, β=1e8: 6e-5 + 1.5e-2
    assert allreduce_time(1e6, 4, LINK) == pytest.approx(0.01506, rel=1e-12)
    # N=2: 2α + b/β
    assert allreduce_time(1e6, 2, LINK) == pytest.approx(2e-5 + 1e-2, rel=1e-12)
    assert allreduce_time(1e6, 1, LINK) == 0.0


def test_collectives_cost_is_count_times_alpha_plus_total_bytes():
    # three all-reduces of 1, 2 and 3 MB over 4 ranks: 3·6α + 1.5·6e6/β
    expected = 3 * 6e-5 + 1.5 * 6e6 / 1e8
    assert collectives_time(3, 6e6, 4, LINK) == pytest.approx(expected, rel=1e-12)
    one_by_one = sum(allreduce_time(b, 4, LINK) for b in (1e6, 2e6, 3e6))
    assert collectives_time(3, 6e6, 4, LINK) == pytest.approx(one_by_one, rel=1e-12)


def test_link_from_line_rate_and_validation():
    gbe = Link.from_rate("1 GbE", 1e9, 5e-5)
    assert gbe.beta == 1.25e8 and gbe.alpha == 5e-5
    with pytest.raises(ValueError, match="alpha"):
        Link("bad", -1.0, 1e8)
    with pytest.raises(ValueError, match="beta"):
        Link("bad", 1e-6, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        collectives_time(1, 10, 0, LINK)
    # the table is ordered from slow to fast and every entry is a valid link
    betas = [lk.beta for lk in LINKS.values()]
    assert betas == sorted(betas) and all(lk.source for lk in LINKS.values())


def _ring_allreduce(vectors: list[list[float]]) -> tuple[list[list[float]], list[int], list[int]]:
    """A ring all-reduce done message by message (reduce-scatter, then all-gather): the
    results, and per rank the number of messages and of elements it sent."""
    n, size = len(vectors), len(vectors[0])
    bounds = [(c * size // n, (c + 1) * size // n) for c in range(n)]
    data = [list(v) for v in vectors]
    msgs, sent = [0] * n, [0] * n
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(n - 1):
            # in step s rank r sends chunk (r - s) (reduce-scatter) / (r + 1 - s) (all-gather)
            outgoing = []
            for r in range(n):
                c = (r - step) % n if phase == "reduce-scatter" else (r + 1 - step) % n
                lo, hi = bounds[c]
                outgoing.append((c, data[r][lo:hi]))
                msgs[r] += 1
                sent[r] += hi - lo
            for r in range(n):
                c, chunk = outgoing[(r - 1) % n]  # from the left neighbour
                lo, hi = bounds[c]
                for i, x in enumerate(chunk):
                    data[r][lo + i] = data[r][lo + i] + x if phase == "reduce-scatter" else x
    return data, msgs, sent


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_ring_formula_matches_a_ring_run_message_by_message(n):
    size = 12 * n  # divisible by n: every chunk has b/N bytes
    vectors = [[float((r + 1) * (i + 1)) for i in range(size)] for r in range(n)]
    data, msgs, sent = _ring_allreduce(vectors)
    total = [sum(v[i] for v in vectors) for i in range(size)]
    assert all(d == total for d in data)  # it is an all-reduce
    b = 4 * size  # float32 bytes
    for r in range(n):
        # each rank: 2(N-1) messages of b/N bytes, one after the other
        cost = msgs[r] * LINK.alpha + 4 * sent[r] / LINK.beta
        assert msgs[r] == 2 * (n - 1)
        assert cost == pytest.approx(allreduce_time(b, n, LINK), rel=1e-12)


ROWS = [
    # epoch, wall_s, comm_s (measured blocking collectives), 6 all-reduces of 1 MB each
    {"epoch": 1, "wall_s": 2.0, "comm_s": 0.5, "comm_calls": 6, "comm_bytes": 6e6, "val_acc": 50.0},
    {"epoch": 2, "wall_s": 2.5, "comm_s": 0.5, "comm_calls": 6, "comm_bytes": 6e6, "val_acc": 80.0},
    {"epoch": 3, "wall_s": 2.0, "comm_s": 0.5, "comm_calls": 6, "comm_bytes": 6e6, "val_acc": 90.0},
]
SLOW = Link("slow", alpha=1e-4, beta=1e7)


def test_projection_by_hand():
    p = project(ROWS, 2, SLOW, target=75.0)
    # per epoch on 2 ranks: 6·2α + 1·6e6/β = 1.2e-3 + 0.6 = 0.6012 s of collectives
    assert p.comm_s == pytest.approx([0.6012] * 3, rel=1e-12)
    assert p.compute_s == pytest.approx([1.5, 2.0, 1.5], rel=1e-12)
    assert p.epoch_s == pytest.approx([2.1012, 2.6012, 2.1012], rel=1e-12)
    assert p.s_per_epoch == pytest.approx((2.1012 + 2.6012 + 2.1012) / 3, rel=1e-12)
    # 75% is first reached at epoch 2: two projected epochs
    assert p.epoch_to_target == 2
    assert p.time_to_target_s == pytest.approx(2.1012 + 2.6012, rel=1e-12)
    assert project(ROWS, 2, SLOW, target=90.0).time_to_target_s == pytest.approx(6.8036)
    missed = project(ROWS, 2, SLOW, target=95.0)
    assert missed.epoch_to_target is None and missed.time_to_target_s is None
    assert project(ROWS, 2, SLOW).time_to_target_s is None


def test_projection_on_more_ranks_and_with_overlap():
    # N=4: 6·6α + 1.5·6e6/β = 3.6e-3 + 0.9
    p = project(ROWS, 4, SLOW)
    assert p.comm_s[0] == pytest.approx(0.9036, rel=1e-12)
    # perfect overlap: max(compute, collectives), here compute
    assert project(ROWS, 4, SLOW, overlap=True).epoch_s == pytest.approx([1.5, 2.0, 1.5])
    # DDP rows (comm_s not measured, 0): all of wall_s counts as compute
    ddp = [{**r, "comm_s": 0.0} for r in ROWS]
    assert project(ddp, 4, SLOW).compute_s == pytest.approx([2.0, 2.5, 2.0])
    on_one_rank = project(ROWS, 1, SLOW)
    assert on_one_rank.comm_s == [0.0, 0.0, 0.0]


def test_projection_needs_epoch_rows():
    with pytest.raises(ValueError, match="no epoch rows"):
        project([{"epoch": 1, "val_acc": 3.0}], 2, SLOW)


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row (an escaped \\| stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
