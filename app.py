"""Gradio app: steer a model between preference objectives with one slider per objective.

Run `python app.py --help` for the flags. Every flag also reads an environment
variable, so a Hugging Face Space can be configured without editing code.
"""

from __future__ import annotations

try:  # On ZeroGPU Spaces, `spaces` must be imported before torch sets up CUDA.
    import spaces  # noqa: F401
except ImportError:
    pass

import argparse
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from tsdpo.bundle import Bundle, BundleError, load_bundle
from tsdpo.compose import MODES
from tsdpo.evaluate import interpolate_position, measure
from tsdpo.generation import DecodingConfig, stream_text
from tsdpo.hub import HubError, resolve_bundle_source
from tsdpo.plot import pareto_figure
from tsdpo.scorers import get_scorer
from tsdpo.vectors import VectorError
from tsdpo.zerogpu import gpu_task

logger = logging.getLogger("tsdpo.app")

DEFAULT_BUNDLE = str(Path(__file__).resolve().parent / "assets" / "demo")
# Tokenizing is linear in the text, but a shared server should not tokenize megabytes on request.
MAX_PROMPT_CHARS = 4000


@dataclass
class AppSettings:
    """Server settings: the bundle to serve and where to listen; each field has a flag and an environment variable."""

    bundle: str = DEFAULT_BUNDLE  # local folder or Hub repo id
    revision: str | None = None  # branch, tag or commit sha for Hub bundles
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    measure_prompts: int = 16  # held-out prompts used to measure the current weights' position
    concurrency: int = 4  # requests the queue runs at once


class BundleRegistry:
    """Bundles loaded by this server, keyed by (source, revision), shared by all sessions."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self._bundles: dict[tuple[str, str | None], Bundle] = {}
        self._measured: dict[tuple, dict[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, source: str, revision: str | None = None) -> Bundle:
        """Load a bundle once; later calls return the same object."""
        key = (source, revision or None)
        with self._lock:
            if key not in self._bundles:
                path, commit = resolve_bundle_source(source, revision or None)
                self._bundles[key] = load_bundle(path, dtype=self.settings.dtype, device=self.settings.device, commit=commit)
            return self._bundles[key]

    def measured_position(self, bundle: Bundle, weights: dict[str, float], mode: str) -> dict[str, float] | None:
        """Measure the composed model on held-out prompts, when the bundle ships a scorer."""
        if not bundle.manifest.scorer or not bundle.eval_set:
            return None
        key = (id(bundle), mode, tuple(weights.values()))
        if key not in self._measured:
            examples = bundle.eval_set[: self.settings.measure_prompts]
            decoding = evaluation_decoding(bundle)
            self._measured[key] = measure(
                bundle.steerable, bundle.tokenizer, examples, get_scorer(bundle.manifest.scorer), weights, mode, decoding
            )
        return self._measured[key]


def evaluation_decoding(bundle: Bundle) -> DecodingConfig:
    """Return the decoding settings of the bundle's grid evaluation, so live measurements match the plot."""
    return DecodingConfig(**(bundle.pareto or {}).get("decoding", {}))


def read_weights(bundle: Bundle, values: tuple[float, ...]) -> dict[str, float]:
    """Map slider values to objectives, raising gr.Error for values the bundle does not support."""
    if len(values) != len(bundle.objectives):
        raise gr.Error(f"expected {len(bundle.objectives)} weights ({', '.join(bundle.objectives)}), got {len(values)}")
    try:
        return bundle.steerable.check_weights(dict(zip(bundle.objectives, (float(v) for v in values))))
    except (TypeError, ValueError) as err:
        raise gr.Error(f"{err}.") from err


def describe_bundle(bundle: Bundle) -> str:
    manifest = bundle.manifest
    base = manifest.base_model
    origin = base.get("repo_id", "embedded in the bundle") + (f" @ {base['revision']}" if base.get("revision") else "")
    lines = [f"**Bundle:** `{bundle.path}`" + (f" (Hub commit `{bundle.commit}`)" if bundle.commit else "")]
    lines.append(f"**Base model:** {origin}. **Objectives:** {', '.join(bundle.objectives)}.")
    if manifest.synthetic:
        lines.append(
            "⚠️ This is a **synthetic demo world**: a tiny model trained from scratch on generated "
            "questions (arithmetic, unit conversion, facts, comparisons, letter counts, definitions), "
            "where helpfulness and verbosity are scored exactly. It shows how TS-DPO steering behaves, "
            "not how a real assistant answers."
        )
    return "\n\n".join(lines)


def build_demo(settings: AppSettings | None = None, registry: BundleRegistry | None = None) -> gr.Blocks:
    """Build the app for the settings' bundle; raise BundleError or HubError when it cannot load."""
    settings = settings or AppSettings()
    registry = registry or BundleRegistry(settings)
    bundle = registry.get(settings.bundle, settings.revision)
    low, high = bundle.steerable.weight_range
    examples = [example["prompt"] for example in bundle.eval_set[:8]]
    default = evaluation_decoding(bundle)

    def current(source: str, revision: str) -> Bundle:
        return registry.get(source, revision or None)

    def generate(prompt: str, *args: Any) -> Iterator[str]:
        *values, mode, max_new_tokens, do_sample, temperature, top_p, seed, source, revision = args
        if not prompt or not prompt.strip():
            raise gr.Error("The prompt is empty: type a question or pick an example.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise gr.Error(f"The prompt has {len(prompt)} characters; shorten it to at most {MAX_PROMPT_CHARS}.")
        active = current(source, revision)
        weights = read_weights(active, tuple(values))
        if mode not in MODES:
            raise gr.Error(f"mode {mode!r} is not one of {', '.join(MODES)}.")
        try:
            decoding = DecodingConfig(
                max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), temperature=float(temperature),
                top_p=float(top_p), seed=int(seed),
            )
        except ValueError as err:
            raise gr.Error(f"{err}.") from err
        text = ""
        try:
            for text in stream_text(active.steerable, active.tokenizer, prompt, weights, mode, decoding):
                yield text
        except ValueError as err:  # a prompt longer than the model's context
            raise gr.Error(f"{err}.") from err
        if not text:
            yield "(the model ended its answer at once)"

    def position(*args: Any) -> tuple[float, float]:
        *values, source, revision = args
        active = current(source, revision)
        weights = read_weights(active, tuple(values))
        if active.pareto is None:
            raise gr.Error("This bundle has no pareto.json, so there is no grid to place the weights on.")
        point = interpolate_position(active.pareto, weights)
        return point["helpfulness"], point["verbosity"]

    def plot_interpolated(*args: Any):
        *values, source, revision = args
        active = current(source, revision)
        weights = read_weights(active, tuple(values))
        point = interpolate_position(active.pareto, weights) if active.pareto else None
        return pareto_figure(active.pareto, weights, interpolated=point)

    def plot_measured(*args: Any):
        *values, mode, source, revision = args
        active = current(source, revision)
        weights = read_weights(active, tuple(values))
        point = interpolate_position(active.pareto, weights) if active.pareto else None
        measured = registry.measured_position(active, weights, mode)
        return pareto_figure(active.pareto, weights, interpolated=point, measured=measured)

    def switch_bundle(source: str, revision: str):
        if not source.strip():
            raise gr.Error("Enter a bundle folder or a Hub repo id such as owner/name.")
        try:
            active = current(source.strip(), revision.strip())
        except (BundleError, HubError, VectorError, OSError) as err:
            raise gr.Error(f"Could not load bundle {source!r}: {err}") from err
        if active.objectives != bundle.objectives:
            raise gr.Error(
                f"Bundle {source!r} has objectives {list(active.objectives)}, but this app was started with "
                f"{list(bundle.objectives)}; restart it with --bundle {source} to use that bundle."
            )
        weights = {name: 0.0 for name in active.objectives}
        point = interpolate_position(active.pareto, weights) if active.pareto else None
        return source.strip(), revision.strip(), describe_bundle(active), pareto_figure(active.pareto, weights, point)

    # On ZeroGPU hardware the GPU is attached only while these run; elsewhere they are unchanged.
    generate = gpu_task(generate)
    plot_measured = gpu_task(plot_measured)

    with gr.Blocks(title="TS-DPO steering demo") as demo:
        gr.Markdown("# Tangent-space DPO: steer between objectives at inference time")
        info = gr.Markdown(describe_bundle(bundle))
        source_state = gr.State(settings.bundle)
        revision_state = gr.State(settings.revision or "")

        with gr.Row():
            with gr.Column(scale=1):
                sliders = [
                    gr.Slider(low, high, value=0.0, step=0.05, label=f"{name} weight",
                              info=entry.description or None, elem_id=f"weight-{name}")
                    for name, entry in zip(bundle.objectives, bundle.manifest.objectives)
                ]
                mode = gr.Radio(list(MODES), value="tangent", label="inference mode",
                                info="tangent: exact linearized model; merged: θ0 + Σ α_k Δ_k, faster")
                prompt = gr.Textbox(label="prompt", lines=2, elem_id="prompt")
                if examples:
                    gr.Examples(examples, inputs=prompt, label="held-out questions from the demo world")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                # Defaults are the settings the plot's grid was measured with.
                with gr.Accordion("decoding settings", open=False):
                    max_new_tokens = gr.Slider(1, 256, value=default.max_new_tokens, step=1, label="max new tokens")
                    do_sample = gr.Checkbox(default.do_sample, label="sample (off: greedy)")
                    temperature = gr.Slider(0.05, 2.0, value=default.temperature, step=0.05, label="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=default.top_p, step=0.05, label="top-p")
                    seed = gr.Number(default.seed, precision=0, label="seed")
                with gr.Accordion("load another bundle", open=False):
                    bundle_box = gr.Textbox(settings.bundle, label="bundle: local folder or Hub repo id")
                    revision_box = gr.Textbox(settings.revision or "", label="revision (branch, tag or commit sha)")
                    load = gr.Button("Load bundle")
            with gr.Column(scale=1):
                output = gr.Textbox(label="response", lines=8, elem_id="response")
                plot = gr.Plot(plot_interpolated(*[0.0] * len(sliders), settings.bundle, settings.revision or ""),
                               label="Pareto plot", elem_id="pareto-plot")
                with gr.Row():
                    helpfulness_out = gr.Number(label="interpolated helpfulness", precision=3)
                    verbosity_out = gr.Number(label="interpolated verbosity", precision=2)

        decode_inputs = [prompt, *sliders, mode, max_new_tokens, do_sample, temperature, top_p, seed,
                         source_state, revision_state]
        generation = run.click(generate, decode_inputs, output, api_name="generate", concurrency_limit=settings.concurrency)
        prompt.submit(generate, decode_inputs, output, api_visibility="private", concurrency_limit=settings.concurrency)
        stop.click(None, None, None, cancels=[generation], api_visibility="private")

        weight_inputs = [*sliders, source_state, revision_state]
        gr.Button("position", visible=False).click(position, weight_inputs, [helpfulness_out, verbosity_out],
                                                   api_name="position")
        for slider in sliders:
            # The interpolated marker moves at once; the measured one follows when it is ready.
            slider.release(plot_interpolated, weight_inputs, plot, api_visibility="private").then(
                position, weight_inputs, [helpfulness_out, verbosity_out], api_visibility="private"
            ).then(plot_measured, [*sliders, mode, source_state, revision_state], plot, api_visibility="private")
        load.click(switch_bundle, [bundle_box, revision_box], [source_state, revision_state, info, plot],
                   api_name="load_bundle")
    return demo


def parse_args(argv: list[str] | None = None) -> AppSettings:
    env = os.environ
    parser = argparse.ArgumentParser(description="TS-DPO steering demo (Gradio).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default=env.get("TSDPO_BUNDLE", DEFAULT_BUNDLE),
                        help="bundle to serve: a local folder or a Hub repo id (env TSDPO_BUNDLE; default: the embedded demo)")
    parser.add_argument("--revision", default=env.get("TSDPO_REVISION"),
                        help="branch, tag or commit sha of a Hub bundle (env TSDPO_REVISION; default: main)")
    parser.add_argument("--host", default=env.get("TSDPO_HOST", env.get("GRADIO_SERVER_NAME", "127.0.0.1")),
                        help="address to listen on; 0.0.0.0 serves other machines (env TSDPO_HOST)")
    parser.add_argument("--port", type=int, default=int(env.get("TSDPO_PORT", env.get("GRADIO_SERVER_PORT", 7860))),
                        help="TCP port (env TSDPO_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", default=env.get("TSDPO_SHARE", "") in ("1", "true", "True"),
                        help="also create a public gradio.live share link (env TSDPO_SHARE=1)")
    parser.add_argument("--device", default=env.get("TSDPO_DEVICE", "cpu"),
                        help="torch device for the model, e.g. cpu or cuda (env TSDPO_DEVICE)")
    parser.add_argument("--dtype", default=env.get("TSDPO_DTYPE", "float32"), choices=["float32", "bfloat16", "float16"],
                        help="model dtype; vectors are composed in float32 and cast once (env TSDPO_DTYPE)")
    parser.add_argument("--measure-prompts", type=int, default=int(env.get("TSDPO_MEASURE_PROMPTS", 16)),
                        help="held-out prompts used to measure the current weights on the plot (env TSDPO_MEASURE_PROMPTS)")
    args = parser.parse_args(argv)
    return AppSettings(bundle=args.bundle, revision=args.revision, host=args.host, port=args.port, share=args.share,
                       device=args.device, dtype=args.dtype, measure_prompts=args.measure_prompts)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    try:
        demo = build_demo(settings)
    except (BundleError, HubError, VectorError) as err:
        raise SystemExit(f"error: {err}") from err
    demo.queue(default_concurrency_limit=settings.concurrency)
    demo.launch(server_name=settings.host, server_port=settings.port, share=settings.share)


if __name__ == "__main__":
    main()
