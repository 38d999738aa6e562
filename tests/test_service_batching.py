"""Micro-batched text and image queries through the running service, over real HTTP: answers of
concurrent requests that shared a forward pass equal the answers each gets alone; a request
whose embedding fails fails alone.

The shared service (``service_env``) gets an encoder whose batches are held open until the
test's requests have all joined (so batching happens whatever the machine's load), and the
text-image model's calls are recorded (so the test sees the batches)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service_env import API_KEY, SAMPLE, service
from skysearch.retrieval.search.batching import QueryEncoder

from skysearch.client import ApiError, SkySearchClient
from skysearch.errors import UsageError

TEXTS = ["a river next to green fields", "a forest", "industrial buildings", "grassland", "x"]
IMAGES = sorted((SAMPLE / "rsscn7-mini").glob("*/*.jpg"))[:4]
WAIT = 60.0


def _hits(result) -> list[tuple[str, float]]:
    return [(hit.id, hit.score) for hit in result.results]


def _same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert all(abs(a - b) <= 1e-5 for (_, a), (_, b) in zip(got, want, strict=True))


class HeldBatches:
    """Installs an encoder that batches up to ``size`` queries and records the model's calls;
    the first call (a lone query, the batcher being idle) is held until ``size`` more have
    joined the next batch, so that batch is full and runs as one forward pass."""

    def __init__(self, monkeypatch, ws: Path, method: str, size: int, fail_on: str = "") -> None:
        searcher = service(ws.root)._searcher
        self.encoder = QueryEncoder(window_ms=WAIT * 1000, max_items=size)
        monkeypatch.setattr(searcher, "encoder", self.encoder)
        tim = searcher.scene_model()
        real = getattr(tim, method)
        self.sizes: list[int] = []
        self.size = size

        def recorded(batch):
            self.sizes.append(len(batch))
            if len(self.sizes) == 1:
                self._wait_for_joiners()
            if fail_on and fail_on in batch:
                raise UsageError(f"refused {fail_on!r}")
            return real(batch)

        monkeypatch.setattr(tim, method, recorded)

    def _wait_for_joiners(self) -> None:
        import time

        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            gathering = sum(len(b.calls) for b in self.encoder._batcher._open.values())
            if gathering >= self.size or len(self.sizes) > 1:
                return
            time.sleep(0.005)


def _concurrently(url: str, calls: list) -> list:
    """Each call(client) in its own thread at once; results or ApiErrors, in order."""
    barrier = threading.Barrier(len(calls))

    def one(call):
        with SkySearchClient(url, api_key=API_KEY, timeout=WAIT) as client:
            barrier.wait()
            try:
                return call(client)
            except ApiError as exc:
                return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_concurrent_text_queries_share_a_forward_pass_and_get_their_own_answers(
    served_url, served_ws, monkeypatch
):
    with SkySearchClient(served_url, api_key=API_KEY) as client:
        alone = {t: _hits(client.search_text(t, k=8)) for t in TEXTS}  # one at a time
    held = HeldBatches(monkeypatch, served_ws, "encode_texts", size=len(TEXTS) - 1)
    calls = [lambda c, t=t: c.search_text(t, k=8) for t in TEXTS]
    together = _concurrently(served_url, calls)
    assert max(held.sizes) > 1 and sum(held.sizes) == len(TEXTS), held.sizes
    for text, result in zip(TEXTS, together, strict=True):
        _same(_hits(result), alone[text])


def test_concurrent_image_queries_share_a_forward_pass_and_get_their_own_answers(
    served_url, served_ws, monkeypatch
):
    with SkySearchClient(served_url, api_key=API_KEY) as client:
        alone = [_hits(client.search_image(path, k=8)) for path in IMAGES]
    held = HeldBatches(monkeypatch, served_ws, "encode_pixels", size=len(IMAGES) - 1)
    # the pixels of a batch are one tensor: the recorder sees a list of them
    calls = [lambda c, p=p: c.search_image(p, k=8) for p in IMAGES]
    together = _concurrently(served_url, calls)
    assert max(held.sizes) > 1 and sum(held.sizes) == len(IMAGES), held.sizes
    for result, want in zip(together, alone, strict=True):
        _same(_hits(result), want)


def test_a_failing_query_fails_alone_in_its_batch(served_url, served_ws, monkeypatch):
    with SkySearchClient(served_url, api_key=API_KEY) as client:
        alone = {t: _hits(client.search_text(t, k=5)) for t in TEXTS}
    held = HeldBatches(
        monkeypatch, served_ws, "encode_texts", size=len(TEXTS) - 1, fail_on="grassland"
    )
    together = _concurrently(served_url, [lambda c, t=t: c.search_text(t, k=5) for t in TEXTS])
    assert max(held.sizes) > 1, held.sizes
    for text, result in zip(TEXTS, together, strict=True):
        if text == "grassland":
            assert isinstance(result, ApiError) and result.status_code == 400
            assert "refused 'grassland'" in str(result)
        else:
            _same(_hits(result), alone[text])


def test_the_service_embeds_texts_through_a_traced_tower_like_the_cli(served_ws):
    """The service traces the text tower at start-up; its embeddings are the CLI's (eager)."""
    import numpy as np
    from skysearch.encoders.factory import load_text_image

    searcher = service(served_ws.root)._searcher
    served = searcher.scene_model()
    assert served.traced_text is not None
    eager = load_text_image(searcher.workspace)
    assert eager.traced_text is None
    np.testing.assert_allclose(served.encode_texts(TEXTS), eager.encode_texts(TEXTS), atol=1e-5)
