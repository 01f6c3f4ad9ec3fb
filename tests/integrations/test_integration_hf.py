"""Hugging Face feature extraction on a tiny randomly initialised BERT built from a config (no
download): the streamed statistics equal those of the explicitly extracted, masked features
(NumPy reference), padding does not change them, and rank_models / nc_profile take the model
directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'ncfast[hf]')")

import ncfast  # noqa: E402
from ncfast.integrations import hf  # noqa: E402
from ncfast.metrics.registry import score_stats  # noqa: E402
from reference_stats import numpy_stats, rel_err  # noqa: E402

K, VOCAB, HIDDEN = 3, 40, 16


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def batches(n_batches=4, size=12, pad_to=None, seed=0, token_labels=False):
    """Sequences of 3..10 real tokens, right-padded; the class shifts the token ids."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, K, (size,), generator=gen)
        lengths = torch.randint(3, 11, (size,), generator=gen)
        width = pad_to or int(lengths.max())
        ids = torch.zeros(size, width, dtype=torch.int64)
        mask = torch.zeros(size, width, dtype=torch.int64)
        for i in range(size):
            ids[i, : lengths[i]] = torch.randint(1, 10, (int(lengths[i]),), generator=gen) + 10 * y[i]
            mask[i, : lengths[i]] = 1
        labels = torch.where(mask.bool(), ids % K, torch.full_like(ids, -100)) if token_labels else y
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def explicit(model, data, layer, pooling):
    """Hidden states extracted batch by batch and pooled with NumPy: the independent path."""
    rows, labels = [], []
    with torch.no_grad():
        for batch in data:
            states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True).hidden_states
            h = states[layer].double().numpy()
            m = batch["attention_mask"].numpy().astype(bool)
            y = batch["labels"].numpy()
            for i in range(h.shape[0]):
                real = h[i][m[i]]
                if pooling == "mean":
                    rows.append(real.mean(axis=0)), labels.append(y[i])
                elif pooling == "cls":
                    rows.append(h[i, 0]), labels.append(y[i])
                elif pooling == "last":
                    rows.append(real[-1]), labels.append(y[i])
                else:
                    keep = m[i] & (y[i] != -100)
                    rows.extend(h[i][keep]), labels.extend(y[i][keep])
    return np.array(rows), np.array(labels)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last", "tokens"])
def test_streamed_statistics_equal_the_masked_features(bert, pooling):
    data = batches(token_labels=pooling == "tokens")
    stats = hf.class_stats(bert, data, layers=[0, "hidden_states.2"], num_classes=K, pooling=pooling)
    assert list(stats) == ["hidden_states.0", "hidden_states.2"]
    for name, layer in (("hidden_states.0", 0), ("hidden_states.2", 2)):
        x, y = explicit(bert, data, layer, pooling)
        ref = numpy_stats(x, y, K)
        np.testing.assert_array_equal(stats[name].counts.numpy(), ref.counts)
        assert rel_err(stats[name].means, ref.means) < 1e-6
        assert rel_err(stats[name].within_scatter, ref.scatter) < 1e-5


def test_padding_does_not_change_the_mean_pooled_statistics(bert):
    tight = hf.class_stats(bert, batches(), layers=[-1], num_classes=K)["hidden_states.2"]
    padded = hf.class_stats(bert, batches(pad_to=20), layers=[-1], num_classes=K)["hidden_states.2"]
    assert torch.equal(tight.counts, padded.counts)
    assert rel_err(padded.means, tight.means.numpy()) < 1e-5
    assert rel_err(padded.within_scatter, tight.within_scatter.numpy()) < 1e-4


def test_rank_models_and_nc_profile_take_the_model_directly(bert):
    data = batches()
    ranking = ncfast.rank_models({"bert": bert}, data, scores=["nc1", "logme", "h_score"])
    direct = hf.class_stats(bert, data, layers=[-1], num_classes=K, per_class_diag=True)["hidden_states.2"]
    expected, _ = score_stats(direct, ["nc1", "logme", "h_score"])
    for name, value in expected.items():
        assert ranking.scores["bert"][name] == pytest.approx(value, rel=1e-10)
    assert ranking.dims["bert"] == HIDDEN and ranking.num_samples["bert"] == 48
    profile = ncfast.finetune.nc_profile(bert, data, [1, 2])
    assert profile.layers == ["hidden_states.1", "hidden_states.2"]
    assert profile["hidden_states.2"].nc1 == pytest.approx(ncfast.metrics.nc1(direct), rel=1e-10)
    assert not bert.training


def test_bad_pooling_layers_and_labels(bert):
    with pytest.raises(ValueError, match="pooling"):
        hf.HFFeatures(bert, pooling="max")
    with pytest.raises(ValueError, match="layers: 'hidden_states.9'"):
        hf.class_stats(bert, batches(1), layers=["hidden_states.9"])
    with pytest.raises(ValueError, match="out of range"):
        hf.class_stats(bert, batches(1), layers=[5])
    with pytest.raises(ValueError, match="token pooling needs"):
        hf.class_stats(bert, batches(1), pooling="tokens")
    with pytest.raises(TypeError, match="transformers model"):
        hf.HFFeatures(torch.nn.Linear(2, 2))
