"""NC-guided fine-tuning helpers: one-pass profile, layer rule, freezing, skip projection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncfast import metrics
from ncfast.workflows.finetune import ParamCount, SkipToHead, choose_layer, count_parameters, freeze_all_but, nc_profile
from ncfast.nn import NCMonitor
from ncfast.nn.profile import LayerNC, NCProfile

K = 3


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(6, K)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(self.pool(self.block2(self.block1(x))))


def data(rows=90, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (rows,), generator=gen)
    x = torch.randn(rows, 1, 5, 5, generator=gen) + y[:, None, None, None].float()
    return x, y


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net()


# ---------------------------------------------------------------------------------- profile


def test_profile_is_one_pass_and_matches_a_monitor(net):
    x, y = data()
    net.train()
    profile = nc_profile(net, (x, y), ["block1", "block2", "fc"], batch_size=40)
    assert net.calls == 3 and net.training  # ceil(90 / 40) forwards, training flag restored
    assert not net.block1[0]._forward_hooks  # the monitor is gone
    net.eval()
    monitor = NCMonitor(net, ["block1", "block2", "fc"], K)
    with torch.no_grad(), monitor.labels(y):
        net(x)
    for layer in ("block1", "block2", "fc"):
        # same rows up to float32 rounding (the batches differ in size)
        assert profile[layer].nc1 == pytest.approx(metrics.nc1(monitor.stats[layer]), rel=1e-6)
        assert profile.stats[layer].num_samples == 90
    assert profile.layers == ["block1", "block2", "fc"]


def test_profile_from_a_loader(net):
    x, y = data()
    loader = [(x[i : i + 30], y[i : i + 30]) for i in range(0, 90, 30)]
    a = nc_profile(net, loader, ["block2"], num_classes=K)
    b = nc_profile(net, (x.numpy(), y.numpy()), ["block2"])
    assert a["block2"].cdnv == pytest.approx(b["block2"].cdnv, rel=1e-6)


# ---------------------------------------------------------------------------------- rule


def profile_of(values, score="nc1"):
    return NCProfile([LayerNC(f"b{i}", 8, 100, K, **{score: v}) for i, v in enumerate(values, 1)])


def test_most_collapsed_is_the_default():
    assert choose_layer(profile_of([4.0, 2.0, 1.0, 1.5, 3.0])) == "b3"
    assert choose_layer(profile_of([4.0, 2.0, 1.0, 0.5])) == "b4"
    assert choose_layer(profile_of([3.0, 1.0, 2.0], score="cdnv"), score="cdnv") == "b2"


def test_first_stall_picks_the_first_block_that_stops_lowering_nc1():
    rule = dict(rule="first_stall")
    assert choose_layer(profile_of([4.0, 2.0, 1.0, 1.5, 3.0]), **rule) == "b4"
    assert choose_layer(profile_of([4.0, 2.0, 1.95, 1.0]), **rule) == "b3"  # 2.5% drop < tol = 5%
    assert choose_layer(profile_of([4.0, 2.0, 1.95, 1.0]), tol=0.01, **rule) == "b4"
    assert choose_layer(profile_of([4.0, 2.0, 1.0, 0.5]), **rule) == "b4"  # always improving: the last
    assert choose_layer(profile_of([4.0, 2.0, 1.0]), rule="last") == "b3"


def test_rule_errors():
    with pytest.raises(ValueError, match="rule"):
        choose_layer(profile_of([1.0, 2.0]), rule="best")
    with pytest.raises(ValueError, match="tol"):
        choose_layer(profile_of([1.0, 2.0]), tol=1.5)
    with pytest.raises(ValueError, match=r"undefined for layers \['b2'\]"):
        choose_layer(NCProfile([LayerNC("b1", 8, 10, 2, nc1=1.0), LayerNC("b2", 8, 10, 1)]))


# ---------------------------------------------------------------------------------- freezing


def test_freeze_all_but_sets_flags_and_counts(net):
    count = freeze_all_but(net, "block2", "fc")
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"block2.0.weight", "block2.0.bias", "fc.weight", "fc.bias"}
    expected = 4 * 6 * 9 + 6 + 6 * K + K
    total = expected + 1 * 4 * 9 + 4
    assert count == ParamCount(expected, total)
    assert count.fraction == pytest.approx(expected / total)
    assert "trainable" in str(count)
    assert freeze_all_but(net, "").trainable == total  # "" is the whole model


def test_only_unfrozen_parameters_move_in_a_step(net):
    x, y = data()
    freeze_all_but(net, "fc")
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("fc"), n


def test_freeze_unknown_name(net):
    with pytest.raises(ValueError, match=r"no module named 'block3'.*block2"):
        freeze_all_but(net, "block3")
    with pytest.raises(ValueError, match="trainable"):
        freeze_all_but(net)


def test_count_parameters_counts_shared_weights_once():
    lin = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(lin, lin)).total == 12


# ---------------------------------------------------------------------------------- skip projection


def test_skip_starts_as_the_identity_and_then_learns(net):
    x, y = data()
    net.eval()
    with torch.no_grad():
        plain = net(x)
    wrapped = SkipToHead(net, "block1", "fc", example_input=x[:2])
    assert wrapped.skip.weight.shape == (6, 4) and not wrapped.skip.weight.any()
    with torch.no_grad():
        assert torch.equal(wrapped(x), plain)  # zero-initialised: same function
    count = freeze_all_but(wrapped, "model.block1", "model.fc", "skip")
    assert count.trainable == 4 * 9 + 4 + 6 * K + K + 4 * 6
    opt = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.1)
    wrapped.train()
    nn.functional.cross_entropy(wrapped(x), y).backward()
    assert wrapped.skip.weight.grad.abs().sum() > 0 and net.block1[0].weight.grad.abs().sum() > 0
    assert net.block2[0].weight.grad is None
    opt.step()
    with torch.no_grad():
        moved = wrapped(x)
        # the head sees f + P pool(block1): an explicit computation by the bare layers (no hooks)
        h1 = torch.relu(net.block1[0](x))
        f = torch.relu(net.block2[0](h1)).mean(dim=(2, 3))
        explicit = nn.functional.linear(f + h1.mean(dim=(2, 3)) @ wrapped.skip.weight.T, net.fc.weight, net.fc.bias)
    assert not torch.equal(moved, plain)
    torch.testing.assert_close(moved, explicit)
    assert wrapped._captured is None  # nothing kept after the forward
    bare = wrapped.remove()
    assert bare is net and not net.block1._forward_hooks and not net.fc._forward_pre_hooks


def test_skip_errors(net):
    x, _ = data()
    with pytest.raises(ValueError, match="no module named"):
        SkipToHead(net, "block9", "fc", example_input=x[:2])
    with pytest.raises(ValueError, match=r"head 'block2': expected one \(B, D\) tensor"):
        SkipToHead(net, "block1", "block2", example_input=x[:2])
    with pytest.raises(ValueError, match="'fc' does not run before head 'fc'"):
        SkipToHead(net, "fc", "fc", example_input=x[:2])
    assert not net.fc._forward_hooks and not net.fc._forward_pre_hooks  # probes removed on failure
