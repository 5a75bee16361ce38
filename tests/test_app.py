"""The Gradio app through gradio_client: generation, positions, concurrency and errors."""

import json
import threading

import pytest
from gradio_client import Client

from app import AppSettings, build_demo, parse_args
from tsdpo.bundle import load_bundle
from tsdpo.evaluate import interpolate_position
from tsdpo.generation import DecodingConfig, stream_text

PROMPT = "What is two plus three?"
# prompt, helpfulness, verbosity, mode, max new tokens, sample, temperature, top-p, seed
DEFAULTS = ("tangent", 12, False, 1.0, 1.0, 0)


@pytest.fixture(scope="module")
def served(tiny_bundle_template):
    demo = build_demo(AppSettings(bundle=str(tiny_bundle_template)))
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield url, tiny_bundle_template
    demo.close()


def reference_text(bundle_path, weights, mode="tangent"):
    bundle = load_bundle(bundle_path)
    texts = list(stream_text(bundle.steerable, bundle.tokenizer, PROMPT, weights, mode, DecodingConfig(max_new_tokens=12)))
    return texts[-1] if texts else "(the model ended its answer at once)"


def test_generate_matches_library(served):
    url, bundle_path = served
    client = Client(url, verbose=False)
    for weights in ({"helpfulness": 0.0, "verbosity": 0.0}, {"helpfulness": 2.0, "verbosity": -1.0}):
        text = client.predict(PROMPT, weights["helpfulness"], weights["verbosity"], *DEFAULTS, api_name="/generate")
        assert text == reference_text(bundle_path, weights)


def test_position_interpolates_the_grid(served):
    url, bundle_path = served
    client = Client(url, verbose=False)
    pareto = json.loads((bundle_path / "pareto.json").read_text())
    helpfulness, verbosity = client.predict(1.25, -0.5, api_name="/position")
    expected = interpolate_position(pareto, {"helpfulness": 1.25, "verbosity": -0.5})
    assert helpfulness == pytest.approx(expected["helpfulness"], abs=1e-3)
    assert verbosity == pytest.approx(expected["verbosity"], abs=1e-2)


def test_two_concurrent_clients_get_their_own_outputs(served):
    url, bundle_path = served
    requests = [(2.0, -1.0), (-1.0, 2.0)]
    expected = [reference_text(bundle_path, {"helpfulness": h, "verbosity": v}) for h, v in requests]
    assert expected[0] != expected[1]
    results = [None, None]
    positions = [None, None]

    def run(i):
        client = Client(url, verbose=False)
        results[i] = client.predict(PROMPT, *requests[i], *DEFAULTS, api_name="/generate")
        positions[i] = client.predict(*requests[i], api_name="/position")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected
    pareto = json.loads((bundle_path / "pareto.json").read_text())
    for (h, v), position in zip(requests, positions):
        assert position[0] == pytest.approx(interpolate_position(pareto, {"helpfulness": h, "verbosity": v})["helpfulness"], abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [(("   ", 0.0, 0.0), "prompt is empty"),
     (("word " * 1000, 0.0, 0.0), "5000 characters; shorten it to at most 4000"),
     (("word " * 300, 0.0, 0.0), "the model's context is 128 tokens; shorten the prompt"),
     # The slider itself rejects values outside the bundle's weight range, naming value and bound.
     ((PROMPT, 3.0, 0.0), "3.0 is greater than maximum value 2.0"),
     ((PROMPT, 0.0, -1.5), "-1.5 is less than minimum value -1.0")],
)
def test_bad_requests_give_actionable_errors(served, args, message):
    client = Client(served[0], verbose=False)
    with pytest.raises(Exception, match=message):
        client.predict(*args, *DEFAULTS, api_name="/generate")


def test_bad_bundle_path_gives_error(served, tmp_path):
    client = Client(served[0], verbose=False)
    with pytest.raises(Exception, match="Could not load bundle.*not found"):
        client.predict(str(tmp_path / "missing" / "bundle"), "", api_name="/load_bundle")
    with pytest.raises(Exception, match="has no tsdpo.json"):
        client.predict(str(tmp_path), "", api_name="/load_bundle")


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("TSDPO_BUNDLE", "someone/bundle")
    monkeypatch.setenv("TSDPO_PORT", "8123")
    settings = parse_args(["--revision", "v1", "--host", "0.0.0.0"])
    assert (settings.bundle, settings.revision, settings.host, settings.port) == ("someone/bundle", "v1", "0.0.0.0", 8123)
