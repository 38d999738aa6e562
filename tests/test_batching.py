"""The micro-batcher of query embeddings (``skysearch.retrieval.search.batching``): callers
that submit while a batch runs share the next one, each gets its own result or its own error,
an idle batcher adds no wait, and nothing is left running."""

from __future__ import annotations

import threading
import time

import pytest
from skysearch.retrieval.search.batching import MicroBatcher

LONG = 30.0  # a window no test may wait out (it would show as a hang of 30 s)


class Recorder:
    """A batch function: doubles numbers, records each call's items, blocks the first call
    until ``release`` is set (so the batcher is busy while others submit), fails a batch
    holding a negative number."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(LONG)
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {items}")
        return [2 * i for i in items]


def submit_all(batcher: MicroBatcher, run: Recorder, items: list[int]) -> dict[int, object]:
    """Submit ``items`` from one thread each, after a first item (0) keeps the batcher busy;
    item -> its result or exception."""
    out: dict[int, object] = {}

    def one(item: int) -> None:
        try:
            out[item] = batcher.submit("k", run, item)
        except Exception as exc:  # noqa: BLE001 - compared by the test
            out[item] = exc

    first = threading.Thread(target=one, args=(0,))
    first.start()
    assert run.started.wait(LONG)
    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    deadline = time.monotonic() + LONG
    while sum(len(b.calls) for b in batcher._open.values()) + len(out) < len(items):
        assert time.monotonic() < deadline, "the callers did not gather"
        time.sleep(0.01)
    run.release.set()
    for t in [first, *threads]:
        t.join(LONG)
        assert not t.is_alive()
    return out


def test_callers_arriving_while_a_batch_runs_share_the_next_one():
    before = threading.active_count()
    run = Recorder()
    batcher = MicroBatcher(window_s=LONG, max_items=4)
    out = submit_all(batcher, run, [1, 2, 3, 4])
    assert out == {0: 0, 1: 2, 2: 4, 3: 6, 4: 8}  # each caller its own row
    assert run.calls[0] == [0]
    assert sorted(run.calls[1]) == [1, 2, 3, 4]  # one call for the four (full: no window)
    assert len(run.calls) == 2
    assert threading.active_count() == before  # no thread of its own, none left behind


def test_a_failing_item_fails_only_its_caller():
    run = Recorder()
    out = submit_all(MicroBatcher(window_s=LONG, max_items=3), run, [1, -5, 3])
    assert out[1] == 2 and out[3] == 6 and out[0] == 0
    assert isinstance(out[-5], ValueError) and "[-5]" in str(out[-5])
    assert sorted(run.calls[1]) == [-5, 1, 3]  # the batch failed, then each item ran alone
    assert sorted(map(tuple, run.calls[2:])) == [(-5,), (1,), (3,)]


def test_a_lone_caller_does_not_wait_the_window():
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        return [i + 1 for i in items]

    batcher = MicroBatcher(window_s=LONG)
    t0 = time.monotonic()
    assert batcher.submit("k", run, 1) == 2
    assert time.monotonic() - t0 < LONG / 2  # idle: ran at once
    with pytest.raises(ValueError, match="window_s"):
        MicroBatcher(window_s=-1)


def test_a_lone_error_is_raised_to_its_caller():
    def run(items: list[int]) -> list[int]:
        raise KeyError("bad")

    with pytest.raises(KeyError, match="bad"):
        MicroBatcher(window_s=0.001).submit("k", run, 1)


def test_a_batch_returning_too_few_rows_is_retried_item_by_item():
    class Short(Recorder):
        def __call__(self, items: list[int]) -> list[int]:
            return super().__call__(items)[:1]  # one row, whatever the batch

    run = Short()
    out = submit_all(MicroBatcher(window_s=LONG, max_items=2), run, [1, 2])
    assert out == {0: 0, 1: 2, 2: 4}
    assert sorted(run.calls[1]) == [1, 2] and sorted(run.calls[2:]) == [[1], [2]]


def test_callers_gathered_behind_a_batch_run_when_it_ends_not_after_the_window():
    run = Recorder()
    t0 = time.monotonic()
    out = submit_all(MicroBatcher(window_s=LONG), run, [1, 2, 3])  # room for 16: not full
    assert time.monotonic() - t0 < LONG / 2
    assert out == {0: 0, 1: 2, 2: 4, 3: 6} and sorted(run.calls[1]) == [1, 2, 3]


def test_after_a_batch_of_n_the_next_runs_once_n_callers_have_joined():
    run = Recorder()
    batcher = MicroBatcher(window_s=LONG)
    submit_all(batcher, run, [1, 2, 3])  # a batch of 3 ran last
    barrier = threading.Barrier(3)
    out: dict[int, int] = {}

    def one(item: int) -> None:
        barrier.wait()
        out[item] = batcher.submit("k", run, item)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in (4, 5, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LONG)
    assert time.monotonic() - t0 < LONG / 2  # the third caller closed the batch
    assert out == {4: 8, 5: 10, 6: 12} and sorted(run.calls[-1]) == [4, 5, 6]
