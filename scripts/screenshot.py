"""Render assets/screenshot.png: the app on the demo bundle after a slider move and a generation.

Usage: python scripts/screenshot.py  (needs Debian's chromium at /usr/bin/chromium)
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import AppSettings, build_demo  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main() -> None:
    demo = build_demo(AppSettings(measure_prompts=16))
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#pareto-plot .js-plotly-plot")
            for name, value in (("helpfulness", "0.5"), ("verbosity", "0.5")):
                slider = page.locator(f"#weight-{name} input[type=range]")
                slider.fill(value)
                slider.dispatch_event("pointerup")
            page.wait_for_function(
                "() => Array.from(document.querySelector('#pareto-plot .js-plotly-plot').data)"
                ".some(t => t.name === 'current weights (measured)')", timeout=120_000)
            page.locator("#prompt textarea").fill("What is the capital of Japan?")
            page.locator("#generate").click()
            page.wait_for_function("() => document.querySelector('#response textarea').value.length > 0")
            page.wait_for_timeout(2000)
            page.screenshot(path=str(ROOT / "assets" / "screenshot.png"), full_page=True)
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
