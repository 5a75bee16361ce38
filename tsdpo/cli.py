"""Command line: python -m tsdpo {build-demo, generate, inspect, ...}."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("tsdpo")

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "assets" / "demo"


def cmd_build_demo(args: argparse.Namespace) -> None:
    from tsdpo.world.build import DemoBuildConfig, build_demo_bundle

    config = DemoBuildConfig(seed=args.seed)
    if args.quick:
        # A smoke-test configuration: minutes become seconds, quality is not the point.
        config = DemoBuildConfig(
            seed=args.seed, pretrain_conversations=400, pairs_per_objective=64, eval_prompts=8,
            axis=[-1.0, 0.0, 2.0], max_new_tokens=24, baseline_weights=(0.0, 1.0),
        )
        config.pretrain.steps, config.pretrain.warmup_steps, config.pretrain.d_model = 20, 2, 32
        config.pretrain.intermediate_size, config.pretrain.n_layers = 64, 2
        for train in (config.ts_dpo, config.baseline):
            train.steps, train.warmup_steps, train.batch_size = 3, 1, 4
    path = build_demo_bundle(args.output, config, progress=not args.no_progress)
    print(f"wrote {path}")


def cmd_generate(args: argparse.Namespace) -> None:
    from tsdpo.bundle import load_bundle
    from tsdpo.generation import DecodingConfig, stream_text
    from tsdpo.hub import resolve_bundle_source

    path, commit = resolve_bundle_source(args.bundle, args.revision)
    bundle = load_bundle(path, commit=commit, dtype=args.dtype, device=args.device)
    weights = parse_weights(args.weight, bundle.objectives)
    decoding = DecodingConfig(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed)
    printed = ""
    for text in stream_text(bundle.steerable, bundle.tokenizer, args.prompt, weights, args.mode, decoding):
        sys.stdout.write(text[len(printed):] if text.startswith(printed) else "\n" + text)
        sys.stdout.flush()
        printed = text
    sys.stdout.write("\n")


def cmd_inspect(args: argparse.Namespace) -> None:
    from tsdpo.bundle import load_bundle, read_manifest
    from tsdpo.hub import resolve_bundle_source

    path, commit = resolve_bundle_source(args.bundle, args.revision)
    manifest = read_manifest(path)
    bundle = load_bundle(path, commit=commit)  # verifies checksums and validates every vector
    report = {
        "path": str(path),
        "commit": commit,
        "base_model": manifest.base_model,
        "objectives": [{"name": o.name, "file": o.file, "sha256": o.sha256, "description": o.description}
                       for o in manifest.objectives],
        "weight_range": manifest.weight_range,
        "parameters_with_tangent": len(next(iter(bundle.steerable.vectors.values())).tensors),
        "hypervolume": (bundle.pareto or {}).get("hypervolume"),
    }
    print(json.dumps(report, indent=2))


def parse_weights(pairs: list[str], objectives: tuple[str, ...]) -> dict[str, float]:
    """Parse ["helpfulness=1.0", "verbosity=-0.5"] into a weight per objective."""
    weights = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --weight {pair!r} must look like NAME=VALUE, e.g. helpfulness=1.0")
        if name not in objectives:
            raise SystemExit(f"error: --weight names {name!r}, but the bundle's objectives are {list(objectives)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise SystemExit(f"error: --weight {pair!r}: {value!r} is not a number") from None
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tsdpo", description="Tangent-space DPO toolkit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-demo", help="build the embedded demo bundle from scratch")
    build.add_argument("--output", type=Path, default=DEMO_BUNDLE, help=f"bundle folder to write (default {DEMO_BUNDLE})")
    build.add_argument("--seed", type=int, default=0, help="seed of every random choice in the build")
    build.add_argument("--quick", action="store_true", help="a tiny configuration for smoke tests (seconds, poor model)")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")
    build.set_defaults(func=cmd_build_demo)

    for name, func, helptext in (("generate", cmd_generate, "generate text with a bundle at given weights"),
                                 ("inspect", cmd_inspect, "verify a bundle and print its manifest summary")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--bundle", default=str(DEMO_BUNDLE), help="local bundle folder or Hub repo id")
        sub.add_argument("--revision", default=None, help="branch, tag or commit sha of a Hub bundle")
        sub.set_defaults(func=func)
        if name == "generate":
            sub.add_argument("prompt", help="the user message")
            sub.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                             help="weight of one objective, e.g. helpfulness=1.0; repeat per objective (default 0)")
            sub.add_argument("--mode", choices=["tangent", "merged"], default="tangent", help="inference mode")
            sub.add_argument("--max-new-tokens", type=int, default=96, help="maximum tokens to generate")
            sub.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
            sub.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
            sub.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
            sub.add_argument("--seed", type=int, default=0, help="sampling seed")
            sub.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
            sub.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    try:
        from tsdpo.bench import add_bench_parser
    except ImportError:  # the benchmark module is optional at this point of development
        add_bench_parser = None
    if add_bench_parser is not None:
        add_bench_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tsdpo.bundle import BundleError
    from tsdpo.hub import HubError

    try:
        args.func(args)
    except (BundleError, HubError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
