"""checkpoints.LoadOnce: the one load-once rule both adapters (open_clip, transformers) use."""
import threading

import pytest

from datasette_embeddings.embedding.adapters import catalogue, checkpoints, open_clip_models, transformers_models


def test_threads_asking_at_once_share_one_load():
    started = threading.Event()
    release = threading.Event()
    calls = []

    def loader():
        calls.append(threading.current_thread().name)
        started.set()
        release.wait(10)  # the first load is still running while the others ask
        return object()

    load = checkpoints.LoadOnce(loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load()), name=f"t{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    assert not load.loaded
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert load.loaded and load() is results[0] and len(calls) == 1


def test_a_failed_load_is_not_kept_and_the_next_call_tries_again():
    outcomes = [RuntimeError("checkpoint missing"), "weights"]

    def loader():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    load = checkpoints.LoadOnce(loader)
    with pytest.raises(RuntimeError, match="checkpoint missing"):
        load()
    assert not load.loaded
    assert load() == "weights" and load.loaded
    assert load() == "weights" and outcomes == []


@pytest.mark.parametrize("adapter, label", [
    (open_clip_models.OpenClipModel, "apple/mobileclip_s1"),
    (transformers_models.TransformersModel, "facebook/dinov2-small"),
])
def test_both_adapters_load_through_it(adapter, label):
    """Each adapter's ``load`` is a LoadOnce over its own loader: a plain callable a background thread can run."""
    model = adapter(catalogue.find(label))
    assert isinstance(model.load, checkpoints.LoadOnce)
    assert not model.load.loaded
    sentinel = ("model", "preprocess", "tokenizer")
    model.load = checkpoints.LoadOnce(lambda: sentinel)
    thread = threading.Thread(target=model.load)
    thread.start()
    thread.join(10)
    assert model.load.loaded and model.is_available()
