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


def test_callers_of_a_running_batch_coming_back_complete_the_next_one():
    """Four callers in step (a closed loop of four clients): the batch gathered while the
    first ran waits for that caller to come back, then runs at once (not after the window)."""
    run = Recorder()
    batcher = MicroBatcher(window_s=LONG)  # room for 16: never full
    out: dict[int, object] = {}

    def first() -> None:
        out[0] = batcher.submit("k", run, 0)
        out[4] = batcher.submit("k", run, 4)  # back for the next query

    def one(item: int) -> None:
        out[item] = batcher.submit("k", run, item)

    t0 = time.monotonic()
    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert run.started.wait(LONG)
    threads += [threading.Thread(target=one, args=(i,)) for i in (1, 2, 3)]
    for t in threads[1:]:
        t.start()
    while sum(len(b.calls) for b in batcher._open.values()) < 3:
        assert time.monotonic() - t0 < LONG / 2, "the callers did not gather"
        time.sleep(0.01)
    run.release.set()
    for t in threads:
        t.join(LONG)
    assert time.monotonic() - t0 < LONG / 2
    assert out == {0: 0, 1: 2, 2: 4, 3: 6, 4: 8}
    assert [sorted(c) for c in run.calls] == [[0], [1, 2, 3, 4]]


def test_a_batch_waits_while_another_runs_then_a_window_for_callers_that_never_come():
    run = Recorder()
    window = 0.2
    batcher = MicroBatcher(window_s=window)
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda: results.update({0: batcher.submit("k", run, 0)}))]
    threads[0].start()
    assert run.started.wait(LONG)
    for i in (1, 2):
        threads.append(
            threading.Thread(target=lambda i=i: results.update({i: batcher.submit("k", run, i)}))
        )
        threads[-1].start()
    time.sleep(4 * window)  # windows pass while the first batch runs: the second waits on
    assert len(run.calls) == 1
    run.release.set()
    for t in threads:
        t.join(LONG)
        assert not t.is_alive()  # the first caller never came back: one window, then ran
    assert results == {0: 0, 1: 2, 2: 4} and sorted(run.calls[1]) == [1, 2]
