"""The app in headless Chromium: load the page, move a slider, generate, see the text and the plot.

Needs Debian's chromium at /usr/bin/chromium (or TSDPO_CHROMIUM). Without it the
test skips, unless TSDPO_REQUIRE_BROWSER=1 (set by scripts/test.sh) turns the
skip into a failure.
"""

import os
import shutil

import pytest

from app import DEFAULT_BUNDLE, AppSettings, build_demo, evaluation_decoding
from tsdpo.bundle import load_bundle
from tsdpo.generation import stream_text

CHROMIUM = os.environ.get("TSDPO_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# Flags for a root user in a sandbox without network: no sandbox, no GPU, no background requests.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        message = f"chromium not found at {CHROMIUM}; install Debian's chromium package"
        if os.environ.get("TSDPO_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app_url():
    demo = build_demo(AppSettings(bundle=DEFAULT_BUNDLE, measure_prompts=8))
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def plot_traces(page):
    return page.evaluate(
        "() => Array.from(document.querySelector('#pareto-plot .js-plotly-plot').data,"
        " t => ({name: t.name, x: t.x, y: t.y, text: t.text}))"
    )


def test_slider_generate_and_plot(browser, app_url):
    """On the embedded demo bundle, as a user meets it."""
    page = browser.new_page()
    page.goto(app_url)
    page.wait_for_selector("#pareto-plot .js-plotly-plot")
    assert "TS-DPO weight grid" in [t["name"] for t in plot_traces(page)]

    # Move the helpfulness slider to 1.5 and release it.
    slider = page.locator("#weight-helpfulness input[type=range]")
    slider.fill("1.5")
    slider.dispatch_event("pointerup")
    page.wait_for_function(
        "() => Array.from(document.querySelector('#pareto-plot .js-plotly-plot').data)"
        ".some(t => t.name === 'current weights (interpolated)' && String(t.text).includes('helpfulness +1.50'))",
        timeout=30_000,
    )
    interpolated = next(t for t in plot_traces(page) if t["name"] == "current weights (interpolated)")
    assert len(interpolated["x"]) == 1
    # The demo ships a scorer, so a measured marker follows the interpolated one.
    page.wait_for_function(
        "() => Array.from(document.querySelector('#pareto-plot .js-plotly-plot').data)"
        ".some(t => t.name === 'current weights (measured)')",
        timeout=60_000,
    )
    assert "synthetic demo world" in page.content()

    prompt = "What is 7 plus 5?"
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#generate").click()

    bundle = load_bundle(DEFAULT_BUNDLE)
    texts = list(stream_text(bundle.steerable, bundle.tokenizer, prompt, {"helpfulness": 1.5, "verbosity": 0.0},
                             "tangent", evaluation_decoding(bundle)))
    expected = texts[-1] if texts else "(the model ended its answer at once)"
    response = page.locator("#response textarea")
    page.wait_for_function(
        "expected => document.querySelector('#response textarea').value === expected", arg=expected, timeout=60_000
    )
    assert response.input_value() == expected
    page.close()
