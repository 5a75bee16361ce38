"""Base models of the families people use: loading, dtypes, tied embeddings, parameter subsets, mismatches.

The families are tiny models built from configs: Llama, Qwen2, GPT-2 and a
SmolLM-style Llama with tie_word_embeddings=True, each saved with
save_pretrained next to a byte-level BPE tokenizer in its family's style.
Loading by repo id goes through huggingface_hub's cache, filled by transformers
downloading from the mock Hub of tests/hub_server.py on 127.0.0.1, and is then
repeated offline.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from hub_server import folder_files, hub_endpoint, loopback_only  # noqa: F401  (pytest fixtures)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tsdpo.bundle import load_bundle, read_manifest, write_bundle
from tsdpo.compose import SteerableModel
from tsdpo.hub import HubError
from tsdpo.models import (
    BaseModelMismatchError,
    attention_patterns,
    base_model_reference,
    block_prefix,
    check_base_model,
    count_parameters,
    count_saved_activation_bytes,
    estimate_training_memory,
    last_blocks_patterns,
    load_base_model,
    resolve_commit,
)
from tsdpo.tangent import linearized_logits, select_parameters
from tsdpo.vectors import TangentVector, VectorError, canonicalize_tied, load_vector, save_vector

pytestmark = pytest.mark.usefixtures("loopback_only")

VOCAB = 320
LAYERS = 3
CORPUS = [
    "What is two plus three? Two plus three is five.",
    "Name the capital of France. The capital of France is Paris.",
    "Thanks for asking! I am happy to help you with that question today.",
    "You are a helpful assistant. system user assistant",
] * 4

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE with the special tokens and chat template of `family` (GPT-2 has no template)."""
    specials = {
        "llama": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "smollm": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "gpt2": ["<|endoftext|>"],
    }[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    if family == "llama":
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>",
                                          eos_token="<|end_of_text|>")
        wrapped.chat_template = LLAMA3
    elif family == "qwen2":
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                          pad_token="<|endoftext|>")
        wrapped.chat_template = CHATML
    elif family == "smollm":
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                          pad_token="<|im_end|>")
        wrapped.chat_template = CHATML
    else:
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                          eos_token="<|endoftext|>")
    return wrapped


def family_model(family: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    common = {"vocab_size": VOCAB, "attn_implementation": "eager"}
    if family == "gpt2":  # GPT-2 ties its output head to the input embedding
        config = GPT2Config(n_embd=32, n_layer=LAYERS, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, **common)
        return GPT2LMHeadModel(config).eval()
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 64, **common}
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=False, **sizes)).eval()
    return LlamaForCausalLM(LlamaConfig(tie_word_embeddings=family == "smollm", **sizes)).eval()


FAMILIES = ["llama", "qwen2", "gpt2", "smollm"]
CHAT_PREFIX = {
    "llama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "qwen2": "<|im_start|>user\nHi<|im_end|>\n",
    "smollm": "<|im_start|>user\nHi<|im_end|>\n",
}


@pytest.fixture(scope="module")
def saved_families(tmp_path_factory) -> dict[str, Path]:
    """Each family saved with save_pretrained, model and tokenizer in one folder."""
    folders = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        family_model(family).save_pretrained(folder)
        family_tokenizer(family).save_pretrained(folder)
        folders[family] = folder
    return folders


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    return folder


def inputs(batch=2, seq=7, seed=2):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=generator)
    return ids, torch.ones_like(ids), torch.arange(seq).expand(batch, seq)


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def is_tied(model) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


# Loading.


def check_loaded(family, model, tokenizer, reference_logits, ids):
    assert model.config._attn_implementation == "eager"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert is_tied(model) == (family in ("gpt2", "smollm"))
    assert torch.equal(logits_of(model, ids), reference_logits)
    assert tokenizer.pad_token_id is not None
    if family in CHAT_PREFIX:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                             add_generation_prompt=True)
        assert text.startswith(CHAT_PREFIX[family])
    else:
        assert tokenizer.chat_template is None


@pytest.mark.parametrize("family", FAMILIES)
def test_load_family_from_folder(family, saved_families):
    ids, _, _ = inputs()
    model, tokenizer = load_base_model(str(saved_families[family]))
    check_loaded(family, model, tokenizer, logits_of(family_model(family), ids), ids)
    assert resolve_commit(str(saved_families[family])) is None


@pytest.mark.parametrize("family", FAMILIES)
def test_load_family_by_repo_id_then_offline(family, saved_families, hub_endpoint, cache_dir, monkeypatch):
    hub = hub_endpoint
    repo_id = f"tiny/{family}"
    hub.create_repo(repo_id)
    first = hub.commit(repo_id, folder_files(saved_families[family]), message="tiny model")
    hub.tag(repo_id, "v1", first)
    ids, _, _ = inputs()
    reference = logits_of(family_model(family), ids)

    model, tokenizer = load_base_model(repo_id)  # transformers downloads from the mock Hub into the cache
    check_loaded(family, model, tokenizer, reference, ids)
    load_base_model(repo_id, revision="v1")
    assert cache_dir.joinpath(f"models--tiny--{family}", "snapshots", first, "config.json").is_file()

    hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for revision in (None, "main", "v1", first):
        assert resolve_commit(repo_id, revision) == first
        model, tokenizer = load_base_model(repo_id, revision=revision)
        check_loaded(family, model, tokenizer, reference, ids)
    with pytest.raises(HubError, match=rf"tiny/{family}@v2 is not in the local cache.*unset HF_HUB_OFFLINE"):
        load_base_model(repo_id, revision="v2")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_zero_weights_reproduce_base(dtype, saved_families):
    model, _ = load_base_model(str(saved_families["smollm"]), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    params = select_parameters(model)
    generator = torch.Generator().manual_seed(0)
    vectors = {name: TangentVector({n: torch.randn(p.shape, generator=generator) * 0.1 for n, p in params.items()})
               for name in ("helpfulness", "verbosity")}
    steerable = SteerableModel(model, vectors)
    ids, mask, positions = inputs()
    base = logits_of(model, ids)

    for mode in ("tangent", "merged"):
        steered = steerable.decoder({"helpfulness": 0.0, "verbosity": 0.0}, mode).forward(ids, mask, positions)
        assert steered.dtype == getattr(torch, dtype)
        assert torch.equal(steered, base), mode


def test_composition_happens_in_float32(saved_families):
    """Δ1 = 1 + 2⁻¹⁰ and Δ2 = -1 sum to 2⁻¹⁰ in float32.

    Cast to bfloat16 before the sum, Δ1 would round to 1 and the sum would be 0.
    """
    model, _ = load_base_model(str(saved_families["llama"]), dtype="bfloat16")
    name = "model.norm.weight"
    shape = model.get_parameter(name).shape
    vectors = {"a": TangentVector({name: torch.full(shape, 1 + 2**-10)}),
               "b": TangentVector({name: torch.full(shape, -1.0)})}
    assert torch.full(shape, 1 + 2**-10).to(torch.bfloat16).eq(1).all()  # the rounding the test relies on
    steerable = SteerableModel(model, vectors)

    delta = steerable.delta({"a": 1.0, "b": 1.0})[name]
    assert delta.dtype == torch.bfloat16
    assert delta.eq(2**-10).all()
    merged = steerable.merged_parameters({"a": 1.0, "b": 1.0})[name]
    expected = (model.get_parameter(name).float() + 2**-10).to(torch.bfloat16)
    assert torch.equal(merged, expected)


def test_remote_code_stays_off_by_default(tmp_path):
    """A folder whose config maps to custom code fails to load, and the code never runs."""
    marker = tmp_path / "remote-code-ran"
    family_tokenizer("llama").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "tsdpo-custom",
        "architectures": ["CustomModel"],
        "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"},
    }))
    (tmp_path / "custom.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_base_model(str(tmp_path))
    assert not marker.exists()


# Tied embeddings: one parameter, one delta, applied once.


def untied_copy(model: nn.Module) -> nn.Module:
    """The same function with the output head as a separate parameter holding the same values."""
    untied = copy.deepcopy(model)
    untied.get_output_embeddings().weight = nn.Parameter(untied.get_input_embeddings().weight.detach().clone())
    untied.config.tie_word_embeddings = False
    return untied


@pytest.mark.parametrize("family", ["gpt2", "smollm"])
def test_tied_linearization_matches_finite_differences(family):
    model = family_model(family).double()
    assert is_tied(model)
    params = select_parameters(model)
    embedding = "transformer.wte.weight" if family == "gpt2" else "model.embed_tokens.weight"
    assert embedding in params
    assert "lm_head.weight" not in params
    generator = torch.Generator().manual_seed(1)
    delta = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) * 1e-2 for n, p in params.items()}
    ids, mask, _ = inputs()

    _, tangent = linearized_logits(model, params, delta, ids, mask)

    # Reference: perturb the real tied model in place, so the shared tensor moves for both of its uses.
    # Llama computes RMSNorm and softmax in float32 even in a float64 model, which limits ε (see test_tangent.py).
    eps, atol = (1e-6, 1e-8) if family == "gpt2" else (3e-3, 3e-5)
    sides = []
    for sign in (1, -1):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in moved.named_parameters():
                p.add_(sign * eps * delta[name])
        assert is_tied(moved)
        sides.append(logits_of(moved, ids))
    torch.testing.assert_close(tangent, (sides[0] - sides[1]) / (2 * eps), rtol=0, atol=atol)

    # The tied delta acts on the embedding and on the head: J·Δ is the sum of both uses of an untied copy.
    untied = untied_copy(model)
    untied_params = select_parameters(untied)
    head = {**{n: torch.zeros_like(p) for n, p in untied_params.items()}, "lm_head.weight": delta[embedding]}
    body = {**delta, "lm_head.weight": torch.zeros_like(delta[embedding])}
    _, through_head = linearized_logits(untied, untied_params, head, ids, mask)
    _, through_body = linearized_logits(untied, untied_params, body, ids, mask)
    torch.testing.assert_close(tangent, through_head + through_body, rtol=0, atol=1e-12)
    assert through_head.abs().max() > 1e-3  # the head's share is not negligible


def test_tied_merged_delta_is_applied_once():
    model = family_model("smollm")
    params = select_parameters(model)
    generator = torch.Generator().manual_seed(3)
    delta = {n: torch.randn(p.shape, generator=generator) * 0.05 for n, p in params.items()}
    steerable = SteerableModel(model, {"helpfulness": TangentVector(delta)})
    ids, mask, positions = inputs()

    steered = steerable.decoder({"helpfulness": 1.0}, "merged").forward(ids, mask, positions)

    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():  # the tied tensor is listed once, so it moves once
            p.add_(delta[name])
    torch.testing.assert_close(steered, logits_of(moved, ids), rtol=1e-5, atol=1e-5)


def test_tied_vector_saves_one_tensor(tmp_path):
    model = family_model("smollm")
    state = {n: p.detach() for n, p in model.named_parameters(remove_duplicate=False)}
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()  # one tensor, two names

    vector = canonicalize_tied(TangentVector(state), model)
    save_vector(vector, tmp_path / "tied.safetensors")
    loaded = load_vector(tmp_path / "tied.safetensors")
    assert "lm_head.weight" not in loaded.tensors
    assert torch.equal(loaded.tensors["model.embed_tokens.weight"], state["model.embed_tokens.weight"])


def write_tied_bundle(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    model = family_model("smollm")
    model.save_pretrained(directory / "base")
    family_tokenizer("smollm").save_pretrained(directory / "base")
    write_bundle(directory, {"path": "base"}, {"helpfulness": TangentVector(tensors)})
    return directory


def test_conflicting_tied_keys_rejected(tmp_path):
    embedding = torch.randn(VOCAB, 32) * 0.01
    write_tied_bundle(tmp_path, {"model.embed_tokens.weight": embedding, "lm_head.weight": embedding + 1})
    with pytest.raises(VectorError, match="'lm_head.weight' and 'model.embed_tokens.weight' are one tied parameter"):
        load_bundle(tmp_path)


def test_tied_keys_with_equal_values_load_once(tmp_path):
    embedding = torch.randn(VOCAB, 32) * 0.01
    write_tied_bundle(tmp_path, {"model.embed_tokens.weight": embedding, "lm_head.weight": embedding.clone()})
    bundle = load_bundle(tmp_path)
    delta = bundle.steerable.delta({"helpfulness": 1.0})
    assert set(delta) == {"model.embed_tokens.weight"}
    assert torch.equal(delta["model.embed_tokens.weight"], embedding)


# Parameter subsets.


@pytest.mark.parametrize("family", FAMILIES)
def test_last_blocks_patterns_select_last_blocks(family):
    model = family_model(family)
    prefix = {"gpt2": "transformer.h"}.get(family, "model.layers")
    assert block_prefix(model) == prefix
    for k in (1, 2, LAYERS):
        patterns = last_blocks_patterns(model, k)
        selected = set(select_parameters(model, patterns))
        expected = {name for name, _ in model.named_parameters()
                    if any(name.startswith(f"{prefix}.{i}.") for i in range(LAYERS - k, LAYERS))}
        assert selected == expected, (k, patterns)
    assert last_blocks_patterns(model, 1) == [rf"^{prefix.replace('.', chr(92) + '.')}\.({LAYERS - 1})\."]
    for bad in (0, LAYERS + 1):
        with pytest.raises(ValueError, match=rf"k={bad} blocks requested, but the model has {LAYERS}"):
            last_blocks_patterns(model, bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_patterns_select_attention_only(family):
    model = family_model(family)
    attention = ".attn." if family == "gpt2" else ".self_attn."
    selected = set(select_parameters(model, attention_patterns(model)))
    assert selected == {name for name, _ in model.named_parameters() if attention in name}
    assert selected


def test_bundle_records_parameter_subset(tmp_path):
    model = family_model("qwen2")
    model.save_pretrained(tmp_path / "base")
    family_tokenizer("qwen2").save_pretrained(tmp_path / "base")
    patterns = last_blocks_patterns(model, 1)
    subset = select_parameters(model, patterns)
    vector = TangentVector({n: torch.randn(p.shape) * 0.01 for n, p in subset.items()},
                           {"parameter_patterns": json.dumps(patterns)})

    write_bundle(tmp_path, {"path": "base"}, {"helpfulness": vector}, parameter_patterns=patterns)

    assert read_manifest(tmp_path).parameter_patterns == patterns
    bundle = load_bundle(tmp_path)
    assert set(bundle.steerable.vectors["helpfulness"].tensors) == set(subset)
    assert json.loads(bundle.steerable.vectors["helpfulness"].metadata["parameter_patterns"]) == patterns


def test_memory_estimate_arithmetic():
    model = family_model("smollm")
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())  # the tied tensor is counted once
    tangent = count_parameters(model, last_blocks_patterns(model, 1))

    estimate = estimate_training_memory(total, tangent, "bfloat16")
    assert (estimate.base, estimate.tangent, estimate.tangent_cast) == (2 * total, 4 * tangent, 2 * tangent)
    assert (estimate.gradient, estimate.adam) == (4 * tangent, 8 * tangent)
    assert estimate.total == 2 * total + 18 * tangent
    assert estimate_training_memory(total, total, "float32").total == 20 * total


def test_saved_activation_count_on_meta_matches_cpu():
    """The meta device gives the same count as real tensors, so real model sizes can be counted without memory."""
    sequences, length = 2, 16
    counts = {}
    for device in ("cpu", "meta"):
        with torch.device(device):
            model = family_model("qwen2")
        for label, patterns in (("full", None), ("last block", last_blocks_patterns(model, 1)),
                                ("attention", attention_patterns(model))):
            counts[device, label] = count_saved_activation_bytes(model, patterns, sequences, length)
        assert all(p.requires_grad for p in model.parameters())  # the caller's flags are restored
    for label in ("full", "last block", "attention"):
        assert counts["cpu", label] == counts["meta", label]
    log_softmax_output = sequences * length * VOCAB * 4  # saved in float32 for its backward
    assert counts["cpu", "full"] > counts["cpu", "attention"] > counts["cpu", "last block"] >= log_softmax_output
    assert count_saved_activation_bytes(model, None, 2 * sequences, length) == 2 * counts["meta", "full"]


# Mismatches between a vector or manifest and the loaded base model.


@pytest.mark.parametrize("family", FAMILIES)
def test_vector_with_extra_vocabulary_rows(family):
    model = family_model(family)
    embedding = "transformer.wte.weight" if family == "gpt2" else "model.embed_tokens.weight"
    vector = TangentVector({embedding: torch.zeros(VOCAB + 2, 32)})
    with pytest.raises(VectorError, match=rf"tensor '{embedding}' has shape \({VOCAB + 2}, 32\).*\({VOCAB}, 32\)"):
        SteerableModel(model, {"helpfulness": vector})


def test_vector_from_another_architecture(tmp_path):
    """A GPT-2 vector in a bundle whose base is a Llama model is rejected, naming the first foreign tensor."""
    model = family_model("llama")
    model.save_pretrained(tmp_path / "base")
    family_tokenizer("llama").save_pretrained(tmp_path / "base")
    gpt2 = select_parameters(family_model("gpt2"))
    vector = TangentVector({n: torch.zeros(p.shape) for n, p in gpt2.items()})
    write_bundle(tmp_path, {"path": "base"}, {"verbosity": vector})
    with pytest.raises(VectorError, match=r"verbosity: tensor 'transformer\.[\w.]+' is not a parameter of the base"):
        load_bundle(tmp_path)


def test_manifest_architecture_mismatch_names_both():
    llama = family_model("llama")
    reference = base_model_reference("tiny/gpt2", family_model("gpt2"))
    assert reference == {"repo_id": "tiny/gpt2", "revision": "main", "model_type": "gpt2",
                         "architecture": "GPT2LMHeadModel"}
    with pytest.raises(BaseModelMismatchError, match="base_model.model_type in the manifest is 'gpt2'.*'llama'"):
        check_base_model(reference, llama)
    check_base_model({**reference, "model_type": "llama", "architecture": "LlamaForCausalLM"}, llama)


def test_manifest_revision_mismatch_names_both(saved_families, hub_endpoint, cache_dir, monkeypatch):
    """The manifest records the commit the vectors were trained on, and main has moved on since."""
    hub = hub_endpoint
    hub.create_repo("tiny/llama")
    trained_on = hub.commit("tiny/llama", folder_files(saved_families["llama"]), message="v1 weights")
    model, _ = load_base_model("tiny/llama")
    reference = base_model_reference("tiny/llama", model, revision="main", commit=trained_on)
    assert reference["commit"] == trained_on
    now = hub.commit("tiny/llama", {"README.md": b"new card\n"}, message="update card")

    commit = resolve_commit("tiny/llama", reference["revision"])
    assert commit == now
    with pytest.raises(BaseModelMismatchError, match=rf"base_model.commit in the manifest is {trained_on}.*"
                                                     rf"loaded at commit {now}.*revision {trained_on}"):
        check_base_model(reference, model, commit=commit)

    pinned = {"repo_id": "tiny/llama", "revision": trained_on}
    check_base_model(pinned, model, commit=resolve_commit("tiny/llama", trained_on))
    with pytest.raises(BaseModelMismatchError, match=rf"base_model.revision in the manifest is {trained_on}.*{now}"):
        check_base_model(pinned, model, commit=now)
