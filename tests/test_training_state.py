"""Statistics travel with a model's checkpoint: save mid-training, resume, same result."""

from __future__ import annotations

import io

import torch

import ncfast


def _batches(count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(64, 8, generator=gen) + 3, torch.randint(0, 4, (64,), generator=gen)) for _ in range(count)]


def _train(model, opt, stats, batches):
    for x, y in batches:
        h = model[0](x)
        stats.update(h.detach(), y)
        loss = torch.nn.functional.cross_entropy(model[1](torch.relu(h)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _fresh():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.05), ncfast.ClassStats(4, 16, per_class_diag=True)


def test_resume_from_checkpoint_with_stats_state_dict():
    batches = _batches(6)
    model, opt, stats = _fresh()
    _train(model, opt, stats, batches)

    model2, opt2, stats2 = _fresh()
    _train(model2, opt2, stats2, batches[:3])
    buffer = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(), "stats": stats2.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)  # plain tensors and numbers: no pickled code
    model3, opt3, stats3 = _fresh()
    model3.load_state_dict(ckpt["model"])
    opt3.load_state_dict(ckpt["opt"])
    stats3.load_state_dict(ckpt["stats"])
    _train(model3, opt3, stats3, batches[3:])

    for name in ("counts", "means", "within_scatter", "class_scatter", "class_diag"):
        assert torch.equal(getattr(stats3, name), getattr(stats, name)), name


def test_whole_object_round_trips_through_torch_save():
    model, opt, stats = _fresh()
    _train(model, opt, stats, _batches(3, seed=2))
    buffer = io.BytesIO()
    torch.save(stats, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.per_class_diag and loaded.num_samples == 3 * 64
    # Continuing both copies keeps them identical.
    extra = torch.randn(10, 16) + 2, torch.arange(10) % 4
    stats.update(*extra)
    loaded.update(*extra)
    for name in ("counts", "means", "within_scatter", "class_scatter", "class_diag"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name)), name
