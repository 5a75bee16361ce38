"""Tangent vector IO, validation and composition against exact references."""

import pytest
import torch
from conftest import tiny_llama

from tsdpo.tangent import select_parameters
from tsdpo.vectors import (
    TangentVector,
    VectorError,
    canonicalize_tied,
    combine_vectors,
    load_vector,
    save_vector,
    validate_vector,
)


def random_vector(params, seed):
    generator = torch.Generator().manual_seed(seed)
    return TangentVector({n: torch.randn(p.shape, generator=generator) for n, p in params.items()})


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    params = select_parameters(tiny_llama())
    vector = random_vector(params, 0)
    vector.metadata.update({"objective": "helpfulness", "beta": "0.1", "steps": "10"})
    save_vector(vector, tmp_path / "v.safetensors")
    loaded = load_vector(tmp_path / "v.safetensors")
    assert loaded.metadata == vector.metadata
    assert loaded.tensors.keys() == vector.tensors.keys()
    for name in vector.tensors:
        assert torch.equal(loaded.tensors[name], vector.tensors[name])


def test_metadata_must_be_strings():
    with pytest.raises(TypeError, match="metadata values must be str"):
        TangentVector({"w": torch.zeros(1)}, {"beta": 0.1})


def test_truncated_file_is_reported_incomplete(tmp_path):
    path = tmp_path / "v.safetensors"
    save_vector(random_vector(select_parameters(tiny_llama()), 0), path)
    data = path.read_bytes()
    for size in (len(data) // 2, 5):
        path.write_bytes(data[:size])
        with pytest.raises(VectorError, match="incomplete or corrupt.*again"):
            load_vector(path)


def test_empty_and_pickle_files_are_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(VectorError, match="contains no tensors"):
        load_vector(tmp_path / "empty.safetensors")
    torch.save({"w": torch.zeros(1)}, tmp_path / "v.bin")
    with pytest.raises(VectorError, match="safetensors files only"):
        load_vector(tmp_path / "v.bin")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda t: {**t, "model.no_such.weight": torch.zeros(2)}, "'model.no_such.weight' is not a parameter"),
        (lambda t: {**t, "model.embed_tokens.weight": torch.zeros(302, 32)}, r"shape \(302, 32\).*shape \(300, 32\)"),
        (lambda t: {**t, "model.norm.weight": torch.zeros(32, dtype=torch.long)}, "expected a floating dtype"),
        (lambda t: {**t, "model.norm.weight": torch.full((32,), float("nan"))}, "NaN or infinite"),
    ],
)
def test_validation_names_tensor_and_shapes(corrupt, message):
    params = select_parameters(tiny_llama())
    vector = TangentVector(corrupt(random_vector(params, 0).tensors))
    with pytest.raises(VectorError, match=message):
        validate_vector(vector, params, objective="helpfulness")


def test_combination_is_exact_weighted_sum_with_negative_weights():
    params = select_parameters(tiny_llama())
    vectors = {"helpfulness": random_vector(params, 1), "verbosity": random_vector(params, 2)}
    combined = combine_vectors(vectors, {"helpfulness": 1.5, "verbosity": -0.75})
    for name in params:
        expected = 1.5 * vectors["helpfulness"].tensors[name].double() - 0.75 * vectors["verbosity"].tensors[name].double()
        assert combined[name].dtype == torch.float32
        torch.testing.assert_close(combined[name].double(), expected, rtol=1e-6, atol=1e-6)


def test_combination_does_not_modify_vectors():
    params = select_parameters(tiny_llama())
    vectors = {"a": random_vector(params, 1), "b": random_vector(params, 2)}
    before = {k: {n: t.clone() for n, t in v.tensors.items()} for k, v in vectors.items()}
    combine_vectors(vectors, {"a": 2.0, "b": -1.0})
    for key, vector in vectors.items():
        for name, tensor in vector.tensors.items():
            assert torch.equal(tensor, before[key][name])


def test_tied_alias_is_folded_and_conflicts_rejected():
    model = tiny_llama(tie_word_embeddings=True)
    params = select_parameters(model)
    assert "lm_head.weight" not in params  # one parameter, one delta
    embedding = torch.randn(300, 32)
    folded = canonicalize_tied(TangentVector({"lm_head.weight": embedding}), model)
    assert torch.equal(folded.tensors["model.embed_tokens.weight"], embedding)

    conflicting = TangentVector({"lm_head.weight": embedding, "model.embed_tokens.weight": embedding + 1})
    with pytest.raises(VectorError, match="one tied parameter"):
        canonicalize_tied(conflicting, model)


def test_saving_tied_model_vector(tmp_path):
    model = tiny_llama(tie_word_embeddings=True)
    vector = random_vector(select_parameters(model), 3)
    save_vector(vector, tmp_path / "tied.safetensors")
    loaded = load_vector(tmp_path / "tied.safetensors")
    validate_vector(canonicalize_tied(loaded, model), select_parameters(model))
