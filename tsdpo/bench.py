"""Benchmark TS-DPO training, decoding and composition against their baselines.

`python -m tsdpo bench` times every case on one model, batch and prompt set.
Contenders run in alternating order within each round, after warm-up rounds,
so a load spike on a shared machine hits all of them alike. Each ratio is the
median over rounds of the per-round ratio, and its spread is the smallest and
largest per-round ratio. docs/benchmarks.md records the results.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tsdpo.data.tokenize import TokenizedPair, collate_pairs

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = REPOSITORY_ROOT / "assets" / "demo"
SIZES = ("tiny", "demo", "medium")
BETA = 0.1
SLIDER_PROMPT = "What is 12 plus 7?"

# The keys every run writes, each a number, or None with a reason under "<key>_reason".
RESULT_KEYS = (
    "train_step_ratio_vs_dpo",
    "train_step_ratio_vs_trl",
    "train_peak_memory_ratio_vs_dpo",
    "decode_speed_ratio_tangent_vs_base",
    "decode_speed_ratio_tangent_vs_base_batch1",
    "decode_speed_ratio_tangent_vs_base_batch8",
    "decode_speed_ratio_merged_vs_base",
    "decode_speed_ratio_merged_vs_base_batch1",
    "decode_speed_ratio_merged_vs_base_batch8",
    "compose_ratio_vs_copy",
    "slider_to_first_token_s",
)


@dataclass(frozen=True)
class ModelShape:
    """A Llama configuration, reduced to the numbers that set its cost."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int

    def build(self, seed: int = 0) -> nn.Module:
        """Build a randomly initialized Llama of this shape with eager attention, in eval mode."""
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=2048,
            attn_implementation="eager",
        )
        return LlamaForCausalLM(config).eval().requires_grad_(False)


# The demo shape matches tsdpo.world.pretrain.PretrainConfig and the 1024-token world tokenizer.
DEMO_SHAPE = ModelShape(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, vocab_size=1024)
SHAPES = {
    "tiny": ModelShape(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, vocab_size=512),
    "medium": ModelShape(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536, vocab_size=4096),
}


def model_shape(size: str) -> ModelShape:
    """Return the shape for `size`; "demo" reads assets/demo/base/config.json when the bundle exists."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {SIZES}")
    if size != "demo":
        return SHAPES[size]
    config_path = DEMO_BUNDLE / "base" / "config.json"
    if not config_path.is_file():
        return DEMO_SHAPE
    config = json.loads(config_path.read_text())
    return ModelShape(
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
    )


@dataclass
class BenchConfig:
    """Settings of one benchmark run: model size, workload and repetitions."""

    size: str = "demo"
    repeats: int = 7  # timed rounds per case
    warmup: int = 2  # untimed rounds per case before the timed ones
    batch_pairs: int = 4  # preference pairs per training step (2 × this many sequences)
    seq_len: int = 128  # tokens per training sequence: half prompt, half completion
    prompt_len: int = 24  # tokens per decoding prompt
    new_tokens: int = 32  # tokens generated per decoding run
    decode_batches: tuple[int, ...] = (1, 8)
    compose_calls: int = 20  # compose calls timed together in one round, to rise above timer noise
    slider_requests: int = 10
    threads: int = 1  # torch intra-op threads
    trl: bool = True
    scale: bool = False  # also sweep sequence length and model width
    bundle: str | None = None  # bundle for the slider case; None uses assets/demo or builds one
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not one of {SIZES}")
        for name in ("repeats", "batch_pairs", "prompt_len", "new_tokens", "compose_calls", "slider_requests", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup} must be at least 0")
        if self.seq_len < 4:
            raise ValueError(f"seq_len={self.seq_len} must be at least 4 (two prompt and two completion tokens)")
        if not self.decode_batches or min(self.decode_batches) < 1:
            raise ValueError(f"decode_batches={self.decode_batches} must list batch sizes of at least 1")
        self.decode_batches = tuple(self.decode_batches)


# ---------------------------------------------------------------------------
# Timing


def alternate(contenders: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Time each contender once per round, rotating the order, after `warmup` untimed rounds.

    Returns wall-clock seconds per contender, one entry per timed round.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        offset = round_index % len(names)
        for name in names[offset:] + names[:offset]:
            start = time.perf_counter()
            contenders[name]()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


@dataclass
class Ratio:
    """Per-round ratios of two contenders' times, summarized."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, numerator: list[float], denominator: list[float]) -> "Ratio":
        ratios = [n / d for n, d in zip(numerator, denominator)]
        return cls(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


def seconds_summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


# ---------------------------------------------------------------------------
# Data


def word_tokenizer(vocab_size: int):
    """Build a word-level tokenizer whose token "t<i>" has id i, so text and ids map one to one.

    Id 0 is the pad token and id 1 the EOS token. TRL tokenizes text, and this
    tokenizer makes it see exactly the ids that the tsdpo contenders see.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def random_pairs(count: int, seq_len: int, vocab_size: int, seed: int) -> list[TokenizedPair]:
    """Pairs of seq_len tokens each: a prompt of seq_len // 2 and completions ending with EOS (id 1)."""
    generator = torch.Generator().manual_seed(seed)
    prompt_len = seq_len // 2
    completion_len = seq_len - prompt_len

    def draw(length: int) -> tuple[int, ...]:
        return tuple(torch.randint(2, vocab_size, (length,), generator=generator).tolist())

    return [
        TokenizedPair(draw(prompt_len), draw(completion_len - 1) + (1,), draw(completion_len - 1) + (1,))
        for _ in range(count)
    ]


def random_prompts(batch: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab_size, (batch, length), generator=generator).tolist()


def random_vectors(model: nn.Module, objectives: tuple[str, ...] = ("helpfulness", "verbosity"), scale: float = 0.01):
    """Draw one random tangent vector per objective, with the shapes of a trained one."""
    from tsdpo.tangent import select_parameters
    from tsdpo.vectors import TangentVector

    params = select_parameters(model)
    vectors = {}
    for index, objective in enumerate(objectives):
        generator = torch.Generator().manual_seed(100 + index)
        tensors = {name: torch.randn(p.shape, generator=generator) * scale for name, p in params.items()}
        vectors[objective] = TangentVector(tensors, {"objective": objective})
    return vectors


def weight_sequence(objectives: tuple[str, ...], step: float = 0.05) -> Iterator[dict[str, float]]:
    """Yield slider weights on a `step` grid inside [-1, 2], enumerating the grid so no tuple repeats soon.

    With two objectives and step 0.05 the grid has 61 × 61 points, so a tuple
    recurs only after 3721 calls, far beyond SteerableModel's cache of 8.
    """
    points = int(round(3 / step)) + 1
    index = 0
    while True:
        yield {name: round(-1 + step * ((index // points**k) % points), 4) for k, name in enumerate(objectives)}
        index += 1


# ---------------------------------------------------------------------------
# Training step


@dataclass
class TrainContender:
    """One optimizer step of a training method, and the tensors it keeps between steps."""

    step: Callable[[], Any]
    persistent: Callable[[], list[Tensor]]  # parameters, frozen copies and optimizer state


def optimizer_state(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [value for state in optimizer.state.values() for value in state.values() if isinstance(value, Tensor)]


def finish_step(parameters: list[Tensor], optimizer: torch.optim.Optimizer) -> None:
    """Clip, step and clear gradients, as tsdpo.train.run_optimization does with max_grad_norm=1."""
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def tsdpo_contender(model: nn.Module, batch: dict[str, Tensor]) -> TrainContender:
    from tsdpo.tangent import select_parameters
    from tsdpo.train import linearized_dpo_loss

    primals = select_parameters(model)
    delta = {name: torch.zeros_like(p, requires_grad=True) for name, p in primals.items()}
    optimizer = torch.optim.AdamW(list(delta.values()), lr=1e-3)

    def step() -> None:
        loss, _ = linearized_dpo_loss(model, primals, delta, batch, BETA)
        loss.backward()
        finish_step(list(delta.values()), optimizer)

    return TrainContender(step, lambda: [*primals.values(), *delta.values(), *optimizer_state(optimizer)])


def dpo_contender(model: nn.Module, batch: dict[str, Tensor]) -> TrainContender:
    from tsdpo.train import standard_dpo_loss

    reference = copy.deepcopy(model).eval().requires_grad_(False)
    policy = copy.deepcopy(model).eval().requires_grad_(True)
    parameters = list(policy.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)

    def step() -> None:
        loss, _ = standard_dpo_loss(policy, reference, batch, BETA)
        loss.backward()
        finish_step(parameters, optimizer)

    return TrainContender(step, lambda: [*parameters, *reference.parameters(), *optimizer_state(optimizer)])


def trl_contender(model: nn.Module, pairs: list[TokenizedPair], batch: dict[str, Tensor], vocab_size: int) -> TrainContender:
    """Set up a TRL DPOTrainer step on the same pairs.

    The step is DPOTrainer.training_step (policy and reference forwards, then
    backward), followed by what Trainer's loop does after it: gradient
    clipping at 1.0, the AdamW step and zero_grad. Raises RuntimeError when
    TRL collates a batch that differs from `batch`.
    """
    import datasets
    from trl import DPOConfig, DPOTrainer

    def text(ids: tuple[int, ...]) -> str:
        return " ".join(f"t{i}" for i in ids)

    # TRL appends the EOS text itself, so completions are given without it.
    rows = [
        {"prompt": text(p.prompt_ids), "chosen": " " + text(p.chosen_ids[:-1]), "rejected": " " + text(p.rejected_ids[:-1])}
        for p in pairs
    ]
    output_dir = tempfile.mkdtemp(prefix="tsdpo-bench-trl-")
    args = DPOConfig(
        output_dir=output_dir, per_device_train_batch_size=len(pairs), max_length=None, beta=BETA,
        learning_rate=1e-4, max_grad_norm=1.0, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )
    policy = copy.deepcopy(model).requires_grad_(True)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    datasets.disable_progress_bars()
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=datasets.Dataset.from_list(rows),
        processing_class=word_tokenizer(vocab_size),
    )
    # The train dataloader shuffles, so the batch is collated from the dataset rows in order instead.
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    trl_batch = trainer.data_collator([{c: trainer.train_dataset[i][c] for c in columns} for i in range(len(pairs))])
    for key in ("input_ids", "attention_mask", "completion_mask"):
        if not torch.equal(trl_batch[key], batch[key]):
            raise RuntimeError(f"TRL collated a different {key} than tsdpo; the comparison would not be like for like")
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    # Trainer.train() sets this before calling training_step; the benchmark calls training_step directly.
    trainer.current_gradient_accumulation_steps = 1
    parameters = list(trainer.model.parameters())

    def step() -> None:
        trainer.training_step(trainer.model, trl_batch)
        finish_step(parameters, trainer.optimizer)

    return TrainContender(step, lambda: [*parameters, *reference.parameters(), *optimizer_state(trainer.optimizer)])


def unique_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors`."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def peak_transient_bytes(step: Callable[[], Any]) -> int:
    """Peak of the bytes allocated minus freed during one call of `step`, from torch.profiler's memory events.

    The profiler reports each operator's own allocations and frees of CPU
    tensors. Their running sum, over operators in start order, is the memory
    the step holds on top of what existed before it.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = sorted((event.time_range.start, event.self_cpu_memory_usage) for event in profiler.events())
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def peak_step_bytes(contender: TrainContender) -> int:
    """Persistent tensors plus the transient peak of one step, measured after a warm-up step."""
    contender.step()  # optimizer state exists from here on
    return unique_bytes(contender.persistent()) + peak_transient_bytes(contender.step)


def bench_training(config: BenchConfig, shape: ModelShape) -> dict[str, Any]:
    model = shape.build(config.seed)
    pairs = random_pairs(config.batch_pairs, config.seq_len, shape.vocab_size, config.seed)
    batch = collate_pairs(pairs, pad_token_id=0)
    contenders = {"tsdpo": tsdpo_contender(model, batch), "dpo": dpo_contender(model, batch)}

    result: dict[str, Any] = {}
    if config.trl:
        try:
            contenders["trl"] = trl_contender(model, pairs, batch, shape.vocab_size)
        except (ImportError, RuntimeError) as err:
            result["train_step_ratio_vs_trl_reason"] = f"TRL could not run: {type(err).__name__}: {err}"
    else:
        result["train_step_ratio_vs_trl_reason"] = "TRL was skipped (--no-trl)"

    times = alternate({name: c.step for name, c in contenders.items()}, config.warmup, config.repeats)
    vs_dpo = Ratio.of(times["tsdpo"], times["dpo"])
    result["train_step_ratio_vs_dpo"] = vs_dpo.median
    details: dict[str, Any] = {"vs_dpo": asdict(vs_dpo), **{name: seconds_summary(t) for name, t in times.items()}}
    if "trl" in times:
        vs_trl = Ratio.of(times["tsdpo"], times["trl"])
        result["train_step_ratio_vs_trl"] = vs_trl.median
        details["vs_trl"] = asdict(vs_trl)
    else:
        result["train_step_ratio_vs_trl"] = None

    memory = {name: peak_step_bytes(contenders[name]) for name in ("tsdpo", "dpo")}
    result["train_peak_memory_ratio_vs_dpo"] = memory["tsdpo"] / memory["dpo"]
    details["peak_bytes"] = memory
    result["train_details"] = details
    return result


# ---------------------------------------------------------------------------
# Decoding


def steerable_model(model: nn.Module):
    from tsdpo.compose import SteerableModel

    return SteerableModel(model, random_vectors(model))


def decode_contenders(steerable, prompts: list[list[int]], new_tokens: int) -> dict[str, Callable[[], None]]:
    """Return greedy decoders of `new_tokens` tokens per prompt: base generate, tangent and merged.

    No EOS id is set, so every run produces exactly `new_tokens` tokens per row.
    """
    from tsdpo.generation import DecodingConfig, decode_tokens

    model = steerable.model
    input_ids = torch.tensor(prompts)
    weights = dict(zip(steerable.objectives, (0.5, 0.25)))
    decoding = DecodingConfig(max_new_tokens=new_tokens)

    def base() -> None:
        with torch.no_grad():
            model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0,
            )

    def mode(name: str) -> Callable[[], None]:
        def run() -> None:
            for _ in decode_tokens(steerable, prompts, weights, name, decoding, eos_token_id=-1, pad_token_id=0):
                pass

        return run

    return {"base": base, "tangent": mode("tangent"), "merged": mode("merged")}


def bench_decoding(config: BenchConfig, shape: ModelShape) -> dict[str, Any]:
    steerable = steerable_model(shape.build(config.seed))
    result: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for batch in config.decode_batches:
        prompts = random_prompts(batch, config.prompt_len, shape.vocab_size, config.seed + batch)
        times = alternate(decode_contenders(steerable, prompts, config.new_tokens), config.warmup, config.repeats)
        tokens = batch * config.new_tokens
        for mode in ("tangent", "merged"):
            # tokens/s of the mode over tokens/s of the base is the base's time over the mode's.
            ratio = Ratio.of(times["base"], times[mode])
            result[f"decode_speed_ratio_{mode}_vs_base_batch{batch}"] = ratio.median
            details[f"{mode}_batch{batch}"] = asdict(ratio)
        details[f"tokens_per_s_batch{batch}"] = {name: tokens / statistics.median(t) for name, t in times.items()}
    for mode in ("tangent", "merged"):
        per_batch = {b: result[f"decode_speed_ratio_{mode}_vs_base_batch{b}"] for b in config.decode_batches}
        lowest = min(per_batch, key=per_batch.get)
        result[f"decode_speed_ratio_{mode}_vs_base"] = per_batch[lowest]
        details[f"{mode}_lowest_at_batch"] = lowest
    result["decode_details"] = details
    return result


# ---------------------------------------------------------------------------
# Composition


def bench_compose(config: BenchConfig, shape: ModelShape) -> dict[str, Any]:
    steerable = steerable_model(shape.build(config.seed))
    weights = weight_sequence(steerable.objectives)
    parameters = steerable.parameters
    first = next(iter(steerable.vectors.values())).tensors

    def repeated(call: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(config.compose_calls):
                call()

        return run

    contenders = {
        "delta": repeated(lambda: steerable.delta(next(weights))),
        "merged": repeated(lambda: steerable.merged_parameters(next(weights))),
        "add": repeated(lambda: {name: torch.add(p, first[name]) for name, p in parameters.items()}),
    }
    times = alternate(contenders, config.warmup, config.repeats)
    delta, merged = Ratio.of(times["delta"], times["add"]), Ratio.of(times["merged"], times["add"])
    return {
        "compose_ratio_vs_copy": max(delta.median, merged.median),
        "compose_details": {
            "objectives": len(steerable.objectives),
            "delta": asdict(delta),
            "merged": asdict(merged),
            "add_median_s_per_call": statistics.median(times["add"]) / config.compose_calls,
        },
    }


# ---------------------------------------------------------------------------
# Slider to first token


def write_synthetic_bundle(directory: Path, shape: ModelShape, seed: int) -> Path:
    """Write a bundle with a random base model of `shape`, a world tokenizer and two random vectors."""
    from tsdpo.bundle import write_bundle
    from tsdpo.world.tokenizer import train_tokenizer

    texts = [
        f"What is {a} plus {b}? {a} plus {b} is {a + b}. Convert {a} meters to centimeters."
        for a in range(40)
        for b in range(0, 40, 7)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=shape.vocab_size)
    model = shape.build(seed)
    model.save_pretrained(directory / "base")
    tokenizer.save_pretrained(directory / "base")
    write_bundle(directory, {"path": "base"}, random_vectors(model))
    return directory


def app_generate_handler(bundle_path: str) -> tuple[Callable[..., Iterator[str]], tuple[str, ...]]:
    """Return the function that app.build_demo wires to the Generate button, and the bundle's objectives."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(REPOSITORY_ROOT))
    try:
        from app import AppSettings, BundleRegistry, build_demo
    finally:
        sys.path.remove(str(REPOSITORY_ROOT))

    settings = AppSettings(bundle=bundle_path)
    registry = BundleRegistry(settings)
    demo = build_demo(settings, registry)
    handlers = [function.fn for function in demo.fns.values() if function.api_name == "generate"]
    if len(handlers) != 1:
        raise RuntimeError(f"expected one function with api_name 'generate' in the app, found {len(handlers)}")
    return handlers[0], registry.get(bundle_path).objectives


def bench_slider(config: BenchConfig, shape: ModelShape) -> dict[str, Any]:
    """Measure seconds from new slider weights to the first streamed text of the app's generate handler."""
    with tempfile.TemporaryDirectory(prefix="tsdpo-bench-bundle-") as scratch:
        if config.bundle is not None:
            bundle_path, source = config.bundle, "given"
        elif config.size == "demo" and (DEMO_BUNDLE / "tsdpo.json").is_file():
            bundle_path, source = str(DEMO_BUNDLE), "assets/demo"
        else:
            bundle_path, source = str(write_synthetic_bundle(Path(scratch), shape, config.seed)), "synthetic"
        generate, objectives = app_generate_handler(bundle_path)
        weights = weight_sequence(objectives)
        # mode, max new tokens, sample, temperature, top-p, seed, bundle source, revision
        settings = (64, False, 1.0, 1.0, 0, bundle_path, "")

        def first_token_seconds(mode: str) -> float:
            values = tuple(next(weights).values())
            start = time.perf_counter()
            stream = generate(SLIDER_PROMPT, *values, mode, *settings)
            next(stream)
            elapsed = time.perf_counter() - start
            stream.close()
            return elapsed

        for _ in range(config.warmup):
            first_token_seconds("tangent")
            first_token_seconds("merged")
        seconds = {"tangent": [], "merged": []}
        for _ in range(config.slider_requests):
            for mode in seconds:
                seconds[mode].append(first_token_seconds(mode))
    return {
        # The app starts in tangent mode, so that is the headline figure.
        "slider_to_first_token_s": statistics.median(seconds["tangent"]),
        "slider_details": {"bundle": source, **{mode: seconds_summary(s) for mode, s in seconds.items()}},
    }


# ---------------------------------------------------------------------------
# Scale sweep


def bench_scale(config: BenchConfig) -> dict[str, Any]:
    """Measure the TS-DPO step ratio and batch-1 decoding ratios across sequence lengths and model widths."""
    demo = model_shape("demo")
    cases = [("seq_len", seq, demo, seq) for seq in (64, 128, 256, 512)]
    for hidden in (64, 128, 256, 512):
        shape = ModelShape(hidden, demo.num_layers, max(1, hidden // 32), 4 * hidden, demo.vocab_size)
        cases.append(("hidden_size", hidden, shape, 128))

    rows = []
    for axis, value, shape, seq_len in cases:
        model = shape.build(config.seed)
        pairs = random_pairs(config.batch_pairs, seq_len, shape.vocab_size, config.seed)
        batch = collate_pairs(pairs, pad_token_id=0)
        train = alternate(
            {"tsdpo": tsdpo_contender(model, batch).step, "dpo": dpo_contender(model, batch).step},
            config.warmup, config.repeats,
        )
        steerable = steerable_model(model)
        # Decoding continues a prompt of seq_len - 16 tokens by 16 tokens, so the context ends at seq_len.
        prompts = random_prompts(1, seq_len - 16, shape.vocab_size, config.seed)
        decode = alternate(decode_contenders(steerable, prompts, 16), config.warmup, config.repeats)
        rows.append({
            "axis": axis, "value": value, "shape": asdict(shape), "seq_len": seq_len,
            "tsdpo_step_s": statistics.median(train["tsdpo"]), "dpo_step_s": statistics.median(train["dpo"]),
            "train_step_ratio_vs_dpo": asdict(Ratio.of(train["tsdpo"], train["dpo"])),
            "base_tokens_per_s": 16 / statistics.median(decode["base"]),
            "decode_tangent_vs_base": asdict(Ratio.of(decode["base"], decode["tangent"])),
            "decode_merged_vs_base": asdict(Ratio.of(decode["base"], decode["merged"])),
        })
        print(f"scale {axis}={value}: {json.dumps(rows[-1]['train_step_ratio_vs_dpo'])}", file=sys.stderr)
    return {"scale": rows}


# ---------------------------------------------------------------------------
# Running and reporting


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run every case and return the figures, their spreads and the machine they ran on."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        random.seed(config.seed)
        shape = model_shape(config.size)
        result: dict[str, Any] = {"config": asdict(config), "shape": asdict(shape), "machine": machine_description()}
        for case in (bench_training, bench_decoding, bench_compose, bench_slider):
            started = time.perf_counter()
            result.update(case(config, shape))
            print(f"{case.__name__}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if config.scale:
            result.update(bench_scale(config))
    finally:
        torch.set_num_threads(previous_threads)
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise RuntimeError(f"the benchmark produced no value for {missing}")
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = ["figure                                        value"]
    for key in RESULT_KEYS:
        value = result[key]
        if value is None:
            text = "null (" + result.get(f"{key}_reason", "no reason given") + ")"
        else:
            text = f"{value:.3f}"
        lines.append(f"{key:45s} {text}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> None:
    config = BenchConfig(
        size=args.size, repeats=args.repeats, warmup=args.warmup, batch_pairs=args.batch_pairs, seq_len=args.seq_len,
        new_tokens=args.new_tokens, threads=args.threads, trl=not args.no_trl, scale=args.scale, bundle=args.bundle,
        slider_requests=args.slider_requests,
    )
    result = run_benchmark(config)
    result["command"] = "python -m tsdpo " + shlex.join(sys.argv[1:]) if "bench" in sys.argv[1:] else None
    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
        print(f"wrote {args.json}")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `bench` subcommand and its flags on `subparsers`."""
    parser = subparsers.add_parser("bench", help="time training, decoding and composition against their baselines")
    parser.add_argument("--size", choices=SIZES, default="demo",
                        help="model shape: tiny (seconds), demo (the demo bundle's Llama) or medium")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per case (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds per case before timing (default 2)")
    parser.add_argument("--batch-pairs", type=int, default=4, help="preference pairs per training step (default 4)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per training sequence (default 128)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per decoding run (default 32)")
    parser.add_argument("--slider-requests", type=int, default=10,
                        help="app requests per mode for the slider-to-first-token figure (default 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine more threads add noise)")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL DPOTrainer comparison")
    parser.add_argument("--scale", action="store_true", help="also sweep sequence length and model width")
    parser.add_argument("--bundle", default=None,
                        help="bundle folder for the slider figure (default: assets/demo for --size demo, else a synthetic one)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.set_defaults(func=cmd_bench)
    return parser
