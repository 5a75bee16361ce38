"""Command line: python -m tsdpo {build-demo, generate, inspect, ...}."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tsdpo.bench import add_bench_parser
from tsdpo.hub import add_push_parser

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


def cmd_train(args: argparse.Namespace) -> None:
    import dataclasses

    from tsdpo.data.load import DataConfig, load_pair_split
    from tsdpo.models import last_blocks_patterns, load_base_model, resolve_commit
    from tsdpo.train import TrainConfig, train_standard_dpo, train_tangent_vector

    commit = resolve_commit(args.model, args.revision)
    model, tokenizer = load_base_model(args.model, revision=args.revision, dtype=args.dtype, device=args.device,
                                       trust_remote_code=args.trust_remote_code)
    patterns = tuple(args.parameters) if args.parameters else None
    if args.last_blocks:
        patterns = tuple(last_blocks_patterns(model, args.last_blocks))
    objective = args.name or args.objective
    config = TrainConfig(
        objective=objective, beta=args.beta, learning_rate=args.learning_rate, steps=args.steps,
        batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        warmup_steps=args.warmup_steps, schedule=args.schedule, max_grad_norm=args.max_grad_norm,
        weight_decay=args.weight_decay, seed=args.seed, max_length=args.max_length,
        max_prompt_length=args.max_prompt_length, parameter_patterns=patterns,
    )
    data = DataConfig(source=args.data, format=args.format, objective=args.objective, split=args.split,
                      limit=args.limit, eval_size=args.eval_size, seed=args.seed)
    split = load_pair_split(data)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{objective}.data.json").write_text(json.dumps(dataclasses.asdict(data), indent=2, default=str) + "\n")
    (output / f"{objective}.eval_prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in split.eval_prompts)
    )
    if args.standard:
        policy, history = train_standard_dpo(model, tokenizer, split.train, config, output)
        policy.save_pretrained(output / f"{objective}.model")
        tokenizer.save_pretrained(output / f"{objective}.model")
        print(f"wrote the standard-DPO model to {output / f'{objective}.model'}")
    else:
        _, history = train_tangent_vector(
            model, tokenizer, split.train, config, output, base_model_name=f"{args.model}@{commit or args.revision or 'local'}",
            data_description=f"{args.data} ({args.objective}, {len(split.train)} pairs)",
        )
        print(f"wrote {output / (objective + '.safetensors')}")
    print(f"final step: {json.dumps(history[-1])}")


def cmd_make_bundle(args: argparse.Namespace) -> None:
    import shutil

    from tsdpo.bundle import EVAL_SET_NAME, load_bundle, write_bundle
    from tsdpo.card import model_card
    from tsdpo.models import resolve_commit
    from tsdpo.vectors import load_vector

    vectors, training = {}, {}
    for pair in args.vector:
        name, sep, path = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --vector {pair!r} must look like NAME=PATH, e.g. helpfulness=out/helpfulness.safetensors")
        vectors[name] = load_vector(path)
        config_path = Path(path).with_name(Path(path).stem + ".config.json")
        training[name] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    # Vectors composed together must cover the same parameters, so they share one subset.
    subsets = {v.metadata.get("parameter_patterns", "null") for v in vectors.values()}
    if len(subsets) > 1:
        raise SystemExit(f"error: the vectors were trained on different parameter subsets {sorted(subsets)}; "
                         f"retrain them on one subset")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if Path(args.model).expanduser().is_dir():
        # A local base model travels inside the bundle, so the bundle works from any folder.
        shutil.copytree(Path(args.model).expanduser(), output / "base", dirs_exist_ok=True)
        base = {"path": "base"}
    else:
        commit = resolve_commit(args.model, args.revision)
        base = {"repo_id": args.model, "revision": args.revision or "main", **({"commit": commit} if commit else {})}
    manifest = write_bundle(output, base, vectors, training=training, parameter_patterns=json.loads(subsets.pop()),
                            description=args.description)
    if args.eval_prompts:
        shutil.copyfile(args.eval_prompts, output / EVAL_SET_NAME)
    load_bundle(output)  # fails now, not in the app, if a vector does not fit the base model
    (output / "README.md").write_text(model_card(manifest, None, title=args.title, summary=args.description))
    print(f"wrote {output}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from tsdpo.bundle import EVAL_SET_NAME, PARETO_NAME, load_bundle
    from tsdpo.evaluate import evaluate_steering
    from tsdpo.generation import DecodingConfig
    from tsdpo.hub import resolve_bundle_source
    from tsdpo.models import load_base_model
    from tsdpo.scorers import get_scorer, load_reward_scorer

    path, commit = resolve_bundle_source(args.bundle, args.revision)
    if commit is not None:
        # Results are written into the bundle folder, and a Hub cache snapshot is not ours to write.
        raise SystemExit(
            f"error: {args.bundle} resolved to the Hub cache; evaluate writes pareto.json into the bundle, so "
            f"download it to a folder first (hf download {args.bundle} --local-dir my-bundle) and pass that folder"
        )
    bundle = load_bundle(path, commit=commit, dtype=args.dtype, device=args.device)
    eval_path = Path(args.eval_prompts) if args.eval_prompts else path / EVAL_SET_NAME
    if not eval_path.is_file():
        raise SystemExit(f"error: no evaluation prompts: {eval_path} not found; pass --eval-prompts FILE.jsonl")
    eval_set = [json.loads(line) for line in eval_path.read_text().splitlines() if line.strip()][: args.limit]
    if args.reward_model:
        attribute = int(args.reward_attribute) if args.reward_attribute.isdigit() else args.reward_attribute
        scorer = load_reward_scorer(args.reward_model, args.reward_revision, attribute, args.verbosity_unit, args.device,
                                    trust_remote_code=args.trust_remote_code)
    elif bundle.manifest.scorer:
        scorer = get_scorer(bundle.manifest.scorer)
    else:
        raise SystemExit("error: this bundle names no built-in scorer; pass --reward-model NAME_OR_PATH")
    baselines = {}
    for pair in args.baseline:
        label, sep, location = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --baseline {pair!r} must look like LABEL=MODEL_PATH")
        baselines[label], _ = load_base_model(location, dtype=args.dtype, device=args.device)
    axes = {name: args.axis for name in bundle.objectives}
    pareto = evaluate_steering(
        bundle.steerable, bundle.tokenizer, eval_set, scorer, axes, baselines, mode=args.mode,
        decoding=DecodingConfig(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size,
        progress_path=path / "grid_progress.jsonl",
    )
    (path / PARETO_NAME).write_text(json.dumps(pareto, indent=1) + "\n")
    (path / "grid_progress.jsonl").unlink()
    print(f"wrote {path / PARETO_NAME}: hypervolume {pareto['hypervolume']}")


def eval_size(text: str) -> float | int:
    """Parse a held-out size: a whole number is a prompt count, anything else a fraction."""
    try:
        return int(text)
    except ValueError:
        return float(text)


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
    add_train_parser(commands)
    add_bundle_parsers(commands)
    add_push_parser(commands)
    add_bench_parser(commands)
    return parser


def add_train_parser(commands) -> None:
    from tsdpo.train import TrainConfig

    defaults = TrainConfig()
    train = commands.add_parser("train", help="train one TS-DPO tangent vector (or, with --standard, a DPO baseline)")
    train.add_argument("--model", required=True, help="base model: Hub id or local folder")
    train.add_argument("--revision", default=None, help="branch, tag or commit sha of the base model")
    train.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="base model dtype")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    train.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub (off by default)")
    train.add_argument("--data", required=True, help="JSONL/Parquet file, datasets folder or Hub dataset name")
    train.add_argument("--format", default="auto", help="auto, jsonl, parquet, helpsteer, ultrafeedback or hf")
    train.add_argument("--objective", default="helpfulness",
                       help="HelpSteer rows: helpfulness, correctness, coherence, complexity, verbosity or length; "
                            "chosen/rejected rows: preference (the dataset's label) or verbosity (by word count)")
    train.add_argument("--name", default=None, help="name of the vector in the bundle (default: the objective)")
    train.add_argument("--split", default=None, help="datasets split, e.g. train[:5000]")
    train.add_argument("--limit", type=int, default=None, help="keep at most this many pairs")
    train.add_argument("--eval-size", type=eval_size, default=0.1,
                       help="prompts held out for evaluation: a fraction such as 0.1, or a count such as 32")
    train.add_argument("--output", required=True, help="folder for the vector, its config and metrics")
    train.add_argument("--standard", action="store_true", help="run standard DPO on all weights instead (a baseline)")
    subset = train.add_mutually_exclusive_group()
    subset.add_argument("--parameters", nargs="+", default=None, metavar="REGEX",
                        help="only parameters whose names match one of these patterns carry a tangent")
    subset.add_argument("--last-blocks", type=int, default=0, help="only the last K transformer blocks carry a tangent")
    for field, kind, helptext in (
        ("beta", float, "DPO temperature β"), ("learning_rate", float, "peak AdamW learning rate"),
        ("steps", int, "optimizer steps"), ("batch_size", int, "pairs per micro-batch"),
        ("gradient_accumulation_steps", int, "micro-batches per optimizer step"),
        ("warmup_steps", int, "linear warm-up steps"), ("max_grad_norm", float, "gradient clipping norm; 0 disables"),
        ("weight_decay", float, "AdamW weight decay"), ("seed", int, "seed of data order and initialization"),
        ("max_length", int, "maximum tokens of prompt + completion"), ("max_prompt_length", int, "maximum prompt tokens"),
    ):
        train.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(defaults, field),
                           help=f"{helptext} (default {getattr(defaults, field)})")
    train.add_argument("--schedule", default=defaults.schedule, choices=["cosine", "linear", "constant"],
                       help="learning-rate schedule after warm-up")
    train.set_defaults(func=cmd_train)


def add_bundle_parsers(commands) -> None:
    make = commands.add_parser("make-bundle", help="assemble trained vectors into a bundle for a Hub base model")
    make.add_argument("--model", required=True,
                      help="base model the vectors were trained on: a Hub id, or a local folder copied into the bundle")
    make.add_argument("--revision", default=None, help="full commit sha of the base model (recommended)")
    make.add_argument("--vector", action="append", required=True, metavar="NAME=PATH",
                      help="one objective's vector file; repeat per objective")
    make.add_argument("--eval-prompts", default=None, help="JSONL of held-out prompts ({\"prompt\": ...} per line)")
    make.add_argument("--output", required=True, help="bundle folder to write")
    make.add_argument("--title", default="TS-DPO bundle", help="model card title")
    make.add_argument("--description", default="Tangent vectors trained with TS-DPO.", help="model card summary")
    make.set_defaults(func=cmd_make_bundle)

    evaluate = commands.add_parser("evaluate", help="evaluate a bundle's weight grid and baselines into pareto.json")
    evaluate.add_argument("bundle", help="local bundle folder or Hub repo id (results are written into the folder)")
    evaluate.add_argument("--revision", default=None, help="branch, tag or commit sha of a Hub bundle")
    evaluate.add_argument("--eval-prompts", default=None, help="JSONL of held-out prompts (default: the bundle's eval_set.jsonl)")
    evaluate.add_argument("--limit", type=int, default=None, help="use at most this many prompts")
    evaluate.add_argument("--reward-model", default=None, help="sequence-classification reward model for helpfulness")
    evaluate.add_argument("--reward-revision", default=None, help="revision of the reward model")
    evaluate.add_argument("--reward-attribute", default="0", help="reward head: index or label name, e.g. helpfulness")
    evaluate.add_argument("--trust-remote-code", action="store_true",
                          help="allow the reward model's own code from the Hub (off by default)")
    evaluate.add_argument("--verbosity-unit", default="words", choices=["words", "tokens"], help="unit of verbosity")
    evaluate.add_argument("--baseline", action="append", default=[], metavar="LABEL=MODEL_PATH",
                          help="a baseline model to measure, e.g. 'scalarized DPO w=0.5=out/w05.model'")
    evaluate.add_argument("--axis", type=float, nargs="+", default=[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0],
                          help="weight values of every objective on the grid")
    evaluate.add_argument("--mode", choices=["tangent", "merged"], default="tangent", help="inference mode")
    evaluate.add_argument("--max-new-tokens", type=int, default=128, help="maximum tokens per response")
    evaluate.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    evaluate.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    evaluate.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    evaluate.set_defaults(func=cmd_evaluate)


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
