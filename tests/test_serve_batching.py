"""Dynamic batching: merged batches, each caller its own rows, errors to every caller, and the metrics that count it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from _serve_models import Gate, expected, publish_tiny_repository, serving, v2_request
from prometheus_client.parser import text_string_to_metric_families

from aideploy.errors import ConfigError, ModelInputError, ModelNotReadyError
from aideploy.serve.batching import Batcher

NUM_REQUESTS = 24
X1 = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-batching")
    return publish_tiny_repository(root / "repo", root / "exports")


def distinct_rows(count: int) -> np.ndarray:
    # Every request gets a different row, so a caller receiving someone else's answer shows.
    return (np.arange(count * 4, dtype=np.float32).reshape(count, 4) % 7) / 3 - np.arange(count, dtype=np.float32)[
        :, None
    ] / count


def samples(metrics_text: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


# --- the batcher alone -----------------------------------------------------------------


def test_batcher_gives_each_caller_its_rows_and_respects_the_batch_limit():
    batches = []

    def predict(x):
        batches.append(len(x))
        return x * 2

    async def scenario():
        batcher = Batcher(predict, max_batch_size=8, max_queue_delay=0.05, name="double")
        batcher.start()
        inputs = [np.full((size, 2), index, dtype=np.float32) for index, size in enumerate([3, 1, 4, 2, 5, 3, 1, 12])]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.stop()
        return inputs, outputs

    inputs, outputs = asyncio.run(scenario())
    for x, y in zip(inputs, outputs):
        np.testing.assert_array_equal(y, x * 2)
    assert sum(batches) == sum(len(x) for x in inputs)
    # Only the 12-row request, larger than the limit on its own, forms a batch above 8.
    assert sorted(batches)[-1] == 12 and all(size <= 8 for size in sorted(batches)[:-1])
    assert len(batches) < 8  # requests were merged


@pytest.mark.parametrize(("inline_below", "inline_after_first"), [(0.0, False), (3600.0, True)])
def test_batcher_runs_a_measured_cheap_batch_on_the_event_loop_and_others_in_its_thread(
    inline_below, inline_after_first
):
    # Where each call ran, not how long it took: the first call is never inline
    # (its cost is unknown); later ones are inline only under a generous limit.
    threads = []

    def predict(x):
        threads.append(threading.current_thread())
        return x + 1

    async def scenario():
        batcher = Batcher(predict, max_batch_size=4, name="plus-one", inline_below=inline_below)
        batcher.start()
        loop_thread = threading.current_thread()
        for _ in range(3):
            np.testing.assert_array_equal(await batcher.submit(np.zeros((1, 2), np.float32)), np.ones((1, 2)))
        await batcher.stop()
        return loop_thread

    loop_thread = asyncio.run(scenario())
    assert len(threads) == 3
    assert threads[0] is not loop_thread
    assert all((thread is loop_thread) == inline_after_first for thread in threads[1:])


def test_batcher_error_reaches_every_caller_of_the_batch_and_the_next_batch_works():
    calls = []

    def predict(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise ModelInputError("boom")
        return x + 1

    async def scenario():
        batcher = Batcher(predict, max_batch_size=64, max_queue_delay=0.05)
        batcher.start()
        failed = await asyncio.gather(*(batcher.submit(np.ones((1, 2))) for _ in range(5)), return_exceptions=True)
        later = await batcher.submit(np.ones((1, 2)))
        await batcher.stop()
        return failed, later

    failed, later = asyncio.run(scenario())
    assert calls[0] == 5, "the five requests should share the first batch"
    assert all(isinstance(error, ModelInputError) for error in failed)
    np.testing.assert_array_equal(later, np.full((1, 2), 2.0))


def test_batcher_refuses_work_when_stopped_and_bad_settings():
    async def scenario():
        batcher = Batcher(lambda x: x, max_batch_size=4)
        with pytest.raises(ModelNotReadyError):
            await batcher.submit(np.ones((1, 1)))
        batcher.start()
        await batcher.stop()
        with pytest.raises(ModelNotReadyError):
            await batcher.submit(np.ones((1, 1)))

    asyncio.run(scenario())
    for settings in ({"max_batch_size": 0}, {"max_batch_size": 4, "max_queue_delay": -1.0}):
        with pytest.raises(ConfigError):
            Batcher(lambda x: x, **settings)


# --- through the server ------------------------------------------------------------------


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(repo):
    x = distinct_rows(NUM_REQUESTS)

    async def scenario():
        async with serving(repo, max_queue_delay_ms=0, max_batch_size=64) as (client, server):
            gate = Gate(server.lookup("tiny", "1").batcher)
            tasks = [
                asyncio.ensure_future(
                    client.post("/v2/models/tiny/versions/1/infer", json=v2_request(x[i : i + 1], id=str(i)))
                )
                for i in range(NUM_REQUESTS)
            ]
            await gate.wait_for(NUM_REQUESTS)
            gate.release.set()
            answers = await asyncio.gather(*tasks)
            metrics = (await client.get("/metrics")).text
            return gate.batch_sizes, answers, metrics

    batch_sizes, answers, metrics = asyncio.run(scenario())
    assert sum(batch_sizes) == NUM_REQUESTS
    assert max(batch_sizes) > 1 and len(batch_sizes) <= 2
    for index, answer in enumerate(answers):
        assert answer.status_code == 200
        assert answer.json()["id"] == str(index)
        np.testing.assert_allclose(answer.json()["outputs"][0]["data"], expected(x[index : index + 1])[0], atol=1e-6)
    values = samples(metrics)
    labels = (("model", "tiny"), ("version", "1"))
    assert values[("aideploy_batch_size_count", labels)] == len(batch_sizes)
    assert values[("aideploy_batch_size_sum", labels)] == NUM_REQUESTS
    assert values[("aideploy_queue_duration_seconds_count", labels)] == NUM_REQUESTS


def test_an_error_in_a_batch_reaches_every_caller_and_the_server_keeps_answering(repo):
    async def scenario():
        async with serving(repo, max_queue_delay_ms=0) as (client, server):
            gate = Gate(server.lookup("tiny", "1").batcher, fail_after_release=RuntimeError("device lost"))
            first = asyncio.ensure_future(client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X1)))
            await gate.wait_for(1)
            rest = [
                asyncio.ensure_future(client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X1)))
                for _ in range(5)
            ]
            await gate.wait_for(6)
            gate.release.set()
            answers = await asyncio.gather(first, *rest)
            gate.fail_after_release = None
            after = await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X1))
            return answers, after, gate.batch_sizes

    answers, after, batch_sizes = asyncio.run(scenario())
    assert batch_sizes[:2] == [1, 5]
    assert answers[0].status_code == 200
    for answer in answers[1:]:
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal server error: the server's log has the details."}
    assert after.status_code == 200



def test_metrics_count_every_request_by_model_version_protocol_and_outcome(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            for _ in range(7):
                assert (await client.post("/v2/models/tiny/infer", json=v2_request(X1))).status_code == 200
            for _ in range(3):
                answer = await client.post("/v1/models/tiny/versions/1:predict", json={"instances": [[1, 2, 3, 4]]})
                assert answer.status_code == 200
            for _ in range(2):
                assert (await client.post("/v2/models/tiny/infer", content=b"{")).status_code == 400
            assert (await client.post("/v2/models/nope/infer", json=v2_request(X1))).status_code == 404
            await client.get("/v2/health/ready")  # health calls are not inference requests
            return (await client.get("/metrics")).text

    values = samples(asyncio.run(scenario()))

    def count(model, version, protocol, outcome):
        labels = (("model", model), ("outcome", outcome), ("protocol", protocol), ("version", version))
        return values.get(("aideploy_requests_total", labels), 0)

    assert count("tiny", "2", "v2", "success") == 7
    assert count("tiny", "1", "tfserving", "success") == 3
    assert count("tiny", "2", "v2", "client_error") == 2
    assert count("_unknown", "", "v2", "client_error") == 1
    total = sum(value for (name, _), value in values.items() if name == "aideploy_requests_total")
    assert total == 13
    latency = sum(value for (name, _), value in values.items() if name == "aideploy_request_duration_seconds_count")
    assert latency == 13
    assert values[("aideploy_inflight_requests", ())] == 0
    compute = (("model", "tiny"), ("version", "2"))
    assert values[("aideploy_compute_duration_seconds_count", compute)] >= 1
