"""NCMonitor: per-layer statistics from forward hooks, checked against a float64 NumPy reference
of activations captured separately."""

from __future__ import annotations

import gc
import io
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from ncfast import metrics
from ncfast.nn import NCMonitor
from reference_stats import numpy_stats, rel_err

K = 4


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else nn.Identity()

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + self.short(x))


class TinyNet(nn.Module):
    """A small residual CNN on 3 x 8 x 8 inputs."""

    def __init__(self, k=K):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = Block(8, 8)
        self.layer2 = Block(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, k)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.layer2(self.layer1(torch.relu(self.stem(x)))))))


class PairOut(nn.Module):
    def forward(self, x):
        return x, x


def batches(n_batches=5, rows=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, K, (rows,), generator=gen)
        x = torch.randn(rows, 3, 8, 8, generator=gen) + y[:, None, None, None].float()
        out.append((x, y))
    return out


def capture(model, names, data):
    """Activations of `names`, captured by separate plain hooks (the independent path)."""
    acts = {n: [] for n in names}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: acts[n].append(o.detach().double().cpu().numpy())) for n in names]
    with torch.no_grad():
        for x, _ in data:
            model(x)
    for h in handles:
        h.remove()
    return {n: np.concatenate(v) for n, v in acts.items()}


def fill(monitor, model, data):
    with torch.no_grad():
        for x, y in data:
            with monitor.labels(y):
                model(x)


def assert_matches(stats, rows, labels, tol=1e-6):
    ref = numpy_stats(rows, labels, K)
    assert stats.num_samples == len(labels)
    np.testing.assert_array_equal(stats.counts.cpu().numpy(), ref.counts)
    assert rel_err(stats.means, ref.means) < tol
    assert rel_err(stats.within_scatter, ref.scatter) < tol
    assert rel_err(stats.class_scatter, ref.class_scatter) < tol


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyNet().eval()


# ---------------------------------------------------------------------------------- values


def test_gap_statistics_match_numpy_reference(model):
    data = batches()
    labels = torch.cat([y for _, y in data]).numpy()
    names = ["stem", "layer1", "layer2", "fc"]
    acts = capture(model, names, data)
    monitor = NCMonitor(model, names, K)
    fill(monitor, model, data)
    for name in names:
        a = acts[name]
        rows = a.mean(axis=(2, 3)) if a.ndim == 4 else a
        stats = monitor.stats[name]
        assert stats.dim == rows.shape[1]
        assert_matches(stats, rows, labels)


def test_flatten_keeps_every_position(model):
    data = batches()
    labels = torch.cat([y for _, y in data]).numpy()
    acts = capture(model, ["layer2"], data)["layer2"]
    monitor = NCMonitor(model, ["layer1", "layer2"], K, pool={"layer2": "flatten"})
    fill(monitor, model, data)
    assert monitor.stats["layer1"].dim == 8  # avg by default for the others
    assert monitor.stats["layer2"].dim == 16 * 4 * 4
    assert_matches(monitor.stats["layer2"], acts.reshape(len(acts), -1), labels)


def test_custom_pool_callable(model):
    data = batches(2)
    labels = torch.cat([y for _, y in data]).numpy()
    acts = capture(model, ["layer1"], data)["layer1"]
    monitor = NCMonitor(model, ["layer1"], K, pool=lambda t: t.amax(dim=(2, 3)))
    fill(monitor, model, data)
    assert_matches(monitor.stats["layer1"], acts.max(axis=(2, 3)), labels)


def test_report_matches_metrics_on_the_same_statistics(model):
    monitor = NCMonitor(model, ["layer1", "layer2"], K)
    fill(monitor, model, batches())
    report = monitor.report()
    assert report.layers == ["layer1", "layer2"]
    for name in report.layers:
        stats = monitor.stats[name]
        assert report[name].nc1 == pytest.approx(metrics.nc1(stats), rel=1e-12)
        assert report[name].cdnv == pytest.approx(metrics.cdnv(stats), rel=1e-12)
        assert report[name].nc2_etf == pytest.approx(metrics.nc2(stats.centred_means()).etf_distance, rel=1e-12)
    assert report.to_dict()["layer2"]["num_samples"] == 200
    text = str(report)
    assert "layer1" in text and "nc1" in text and "cdnv" in text


def test_report_marks_undefined_scores():
    model = nn.Sequential(nn.Linear(3, 3))
    monitor = NCMonitor(model, ["0"], K)
    with monitor.labels(torch.zeros(10, dtype=torch.int64)):  # one class only
        model(torch.randn(10, 3))
    row = monitor.report()["0"]
    assert row.nc1 is None and row.cdnv is None and "at least 2 classes" in row.note


def test_statistics_follow_training_mode_forwards(model):
    """With grad enabled (a training step), values still match and no grad flows into them."""
    data = batches(3)
    labels = torch.cat([y for _, y in data]).numpy()
    acts = capture(model, ["layer2"], data)["layer2"]
    monitor = NCMonitor(model, ["layer2"], K)
    for x, y in data:
        with monitor.labels(y):
            out = model(x)
        out.sum().backward()
    assert_matches(monitor.stats["layer2"], acts.mean(axis=(2, 3)), labels)


def test_numpy_labels_accepted(model):
    monitor = NCMonitor(model, ["fc"], K)
    x, y = batches(1)[0]
    monitor.set_labels(y.numpy().astype(np.int32))
    model(x)
    assert monitor.stats["fc"].num_samples == len(y)


# ---------------------------------------------------------------------------------- enable / disable / reset


def test_disabled_accumulates_nothing_and_needs_no_labels(model):
    monitor = NCMonitor(model, ["layer1"], K)
    x, y = batches(1)[0]
    with monitor.disabled():
        model(x)  # no labels: fine while disabled
        assert not model.layer1._forward_hooks
    assert "layer1" not in monitor.stats
    assert monitor.is_enabled
    monitor.disable()
    model(x)
    assert "layer1" not in monitor.stats and not model.layer1._forward_hooks


def test_enabled_context_restores_previous_state(model):
    monitor = NCMonitor(model, ["layer1"], K, enabled=False)
    x, y = batches(1)[0]
    model(x)
    with monitor.enabled():
        with monitor.labels(y):
            model(x)
    assert not monitor.is_enabled
    model(x)
    assert monitor.stats["layer1"].num_samples == len(y)


def test_reset_forgets_batches(model):
    monitor = NCMonitor(model, ["layer1", "fc"], K)
    fill(monitor, model, batches(2))
    monitor.reset()
    assert len(monitor.stats) == 0
    data = batches(1, seed=3)
    fill(monitor, model, data)
    assert monitor.stats["fc"].num_samples == len(data[0][1])


def test_remove_takes_hooks_off_for_good(model):
    with NCMonitor(model, ["layer1", "fc"], K) as monitor:
        assert model.layer1._forward_hooks
    assert not model.layer1._forward_hooks and not model.fc._forward_hooks
    with pytest.raises(RuntimeError, match="remove"):
        monitor.enable()


# ---------------------------------------------------------------------------------- errors


def test_unknown_layer_lists_close_names(model):
    with pytest.raises(ValueError, match=r"no module named 'layer3'.*close names: .*layer1"):
        NCMonitor(model, ["layer1", "layer3"], K)
    assert not model.layer1._forward_hooks  # nothing registered on failure


def test_non_tensor_output_names_the_layer():
    model = nn.Sequential(nn.Linear(3, 3), PairOut())
    monitor = NCMonitor(model, ["1"], K)
    with monitor.labels(torch.zeros(2, dtype=torch.int64)):
        with pytest.raises(TypeError, match=r"layer '1' \(PairOut\).*tuple, not a tensor"):
            model(torch.randn(2, 3))


def test_missing_labels_name_the_layer(model):
    _monitor = NCMonitor(model, ["layer2"], K)
    with pytest.raises(ValueError, match=r"labels: not set .*layer 'layer2'"):
        model(torch.randn(4, 3, 8, 8))


def test_stale_labels_are_not_counted_twice(model):
    monitor = NCMonitor(model, ["layer2"], K)
    x, y = batches(1)[0]
    monitor.set_labels(y)
    model(x)
    with pytest.raises(ValueError, match="already counted"):
        model(x)
    assert monitor.stats["layer2"].num_samples == len(y)


def test_label_batch_size_mismatch_names_the_layer(model):
    monitor = NCMonitor(model, ["layer1"], K)
    with monitor.labels(torch.zeros(3, dtype=torch.int64)):
        with pytest.raises(ValueError, match=r"3 labels but NCMonitor layer 'layer1' .* batch size 5"):
            model(torch.randn(5, 3, 8, 8))


def test_out_of_range_label_names_the_layer(model):
    monitor = NCMonitor(model, ["fc"], K)
    with monitor.labels(torch.tensor([0, 9])):
        with pytest.raises(ValueError, match=r"layer 'fc'.*9"):
            model(torch.randn(2, 3, 8, 8))


def test_bad_arguments(model):
    with pytest.raises(TypeError, match="model"):
        NCMonitor(lambda x: x, ["a"], K)
    with pytest.raises(ValueError, match="layers"):
        NCMonitor(model, "layer1", K)
    with pytest.raises(ValueError, match="more than once"):
        NCMonitor(model, ["fc", "fc"], K)
    with pytest.raises(ValueError, match="pool"):
        NCMonitor(model, ["fc"], K, pool="max")
    with pytest.raises(ValueError, match="precision"):
        NCMonitor(model, ["fc"], K, precision="sloppy")
    monitor = NCMonitor(model, ["fc"], K)
    with pytest.raises(TypeError, match="labels"):
        monitor.set_labels(torch.zeros(3))
    with pytest.raises(KeyError, match="not monitored"):
        monitor.stats["layer1"]
    with pytest.raises(KeyError, match="no batch"):
        monitor.stats["fc"]


# ---------------------------------------------------------------------------------- checkpoint


def test_state_dict_round_trip_continues_the_stream(model):
    data = batches(4)
    names = ["layer1", "fc"]
    whole = NCMonitor(model, names, K, per_class_diag=True)
    fill(whole, model, data)
    whole.remove()

    first = NCMonitor(model, names, K, per_class_diag=True)
    fill(first, model, data[:2])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "nc": first.state_dict()}, buffer)
    first.remove()

    torch.manual_seed(1)
    fresh = TinyNet().eval()
    buffer.seek(0)
    saved = torch.load(buffer)
    fresh.load_state_dict(saved["model"])
    resumed = NCMonitor(fresh, names, K, per_class_diag=True).load_state_dict(saved["nc"])
    assert resumed.stats["fc"].num_samples == 80
    fill(resumed, fresh, data[2:])
    for name in names:
        a, b = resumed.stats[name], whole.stats[name]
        assert torch.equal(a.counts, b.counts)
        assert rel_err(a.within_scatter, b.within_scatter.numpy()) < 1e-12
        assert rel_err(a.class_diag, b.class_diag.numpy()) < 1e-12


def test_load_state_dict_rejects_other_layers_or_options(model):
    source = NCMonitor(model, ["layer1"], K)
    fill(source, model, batches(1))
    state = source.state_dict()
    source.remove()
    with pytest.raises(ValueError, match="layers"):
        NCMonitor(model, ["layer2"], K).load_state_dict(state)
    with pytest.raises(ValueError, match="num_classes"):
        NCMonitor(model, ["layer1"], K + 1).load_state_dict(state)
    with pytest.raises(ValueError, match="pool"):
        NCMonitor(model, ["layer1"], K, pool="flatten").load_state_dict(state)
    with pytest.raises(ValueError, match="class_diag"):
        NCMonitor(model, ["layer1"], K, per_class_diag=True).load_state_dict(state)


# ---------------------------------------------------------------------------------- autograd


def test_no_autograd_graph_or_activation_is_kept(model):
    model.train()
    monitor = NCMonitor(model, ["layer1", "layer2", "fc"], K)
    refs = []
    probe = model.layer1.register_forward_hook(lambda m, i, o: refs.append(weakref.ref(o)))
    x, y = batches(1)[0]
    with monitor.labels(y):
        out = model(x)  # grad enabled, no backward: the graph would pin the activations
    probe.remove()
    for stats in monitor.stats.values():
        state = stats.state_dict()
        assert all(not t.requires_grad for t in state.values() if isinstance(t, torch.Tensor))
    assert out.grad_fn is not None
    del out
    gc.collect()
    assert refs and refs[0]() is None  # nothing (monitor included) holds the layer1 activation


def test_gradients_are_unchanged_by_the_monitor(model):
    x, y = batches(1)[0]

    def grads():
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    monitor = NCMonitor(model, ["layer1", "layer2", "fc"], K)
    with monitor.labels(y):
        watched = grads()
    for a, b in zip(plain, watched):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_statistics_stay_on_the_device_and_match(model):
    model = model.cuda()
    data = [(x.cuda(), y) for x, y in batches()]  # labels stay on the CPU: the monitor moves them
    labels = torch.cat([y for _, y in data]).numpy()
    names = ["layer1", "layer2", "fc"]
    acts = capture(model, names, data)  # the same GPU activations, float64 on the host
    monitor = NCMonitor(model, names, K, per_class_diag=True)
    fill(monitor, model, data)
    for name in names:
        stats = monitor.stats[name]
        assert stats.device.type == "cuda"
        a = acts[name]
        assert_matches(stats, a.mean(axis=(2, 3)) if a.ndim == 4 else a, labels, tol=1e-5)
    state = monitor.state_dict()
    cpu_monitor = NCMonitor(model.cpu(), names, K, per_class_diag=True).load_state_dict(state)
    assert cpu_monitor.stats["fc"].device.type == "cpu"
    assert torch.equal(cpu_monitor.stats["fc"].counts, monitor.stats["fc"].counts.cpu())
