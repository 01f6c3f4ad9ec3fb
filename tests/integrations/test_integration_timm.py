"""timm feature extraction: stage maps from forward_intermediates, global-average-pooled, and
the pre-logits from forward_head(pre_logits=True), streamed into ClassStats; the statistics
equal those of the explicitly extracted features.

The contract is checked on a small stand-in module that exposes timm's documented feature API
(feature_info, forward_intermediates, forward_features, forward_head), so it runs without
timm; the same checks run on a real timm ResNet (pretrained=False) where timm imports."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np
import pytest
import torch
from torch import nn

import ncfast
from ncfast.integrations import timm as nctimm
from ncfast.metrics.registry import score_stats
from reference_stats import numpy_stats, rel_err

K = 3


class StandIn(nn.Module):
    """Three conv stages and a pooled, normed pre-logits head, with timm's feature API."""

    def __init__(self, num_classes=K):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU())
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, num_classes)
        self.feature_info = [dict(num_chs=8, reduction=1, module="stem"), dict(num_chs=12, reduction=2, module="stage1"),
                             dict(num_chs=16, reduction=4, module="stage2")]

    def forward_intermediates(self, x, indices: Optional[Union[int, List[int]]] = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        take = list(range(3)) if indices is None else ([3 - indices + i for i in range(indices)]
                                                       if isinstance(indices, int) else list(indices))
        maps = []
        for i, stage in enumerate((self.stem, self.stage1, self.stage2)):
            x = stage(x)
            if i in take:
                maps.append(x)
        return maps if intermediates_only else (x, maps)

    def forward_features(self, x):
        return self.stage2(self.stage1(self.stem(x)))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.norm(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def images(n_batches=3, size=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, K, (size,), generator=gen)
        x = torch.randn(size, 3, 16, 16, generator=gen) + y[:, None, None, None].float()
        out.append((x, y))
    return out


def explicit(model, data, stages: Sequence[str]):
    """Each stage's output captured by plain forward hooks and pooled with NumPy; pre-logits by
    forward_head: the independent path."""
    modules = dict(model.named_modules())
    acts = {name: [] for name in stages}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: acts[n].append(o.double().mean(dim=(2, 3))))
               for n in stages]
    pre, labels = [], []
    with torch.no_grad():
        for x, y in data:
            pre.append(model.forward_head(model.forward_features(x), pre_logits=True).double())
            labels.append(y)
    for h in handles:
        h.remove()
    out = {n: torch.cat(v).numpy() for n, v in acts.items()}
    out["pre_logits"] = torch.cat(pre).numpy()
    return out, torch.cat(labels).numpy()


def check_model(model, stages):
    data = images()
    stats = nctimm.class_stats(model, data, layers=[*stages, "pre_logits"], num_classes=K)
    feats, y = explicit(model, data, stages)
    for name in [*stages, "pre_logits"]:
        ref = numpy_stats(feats[name], y, K)
        np.testing.assert_array_equal(stats[name].counts.numpy(), ref.counts)
        assert rel_err(stats[name].means, ref.means) < 1e-6, name
        assert rel_err(stats[name].within_scatter, ref.scatter) < 1e-5, name
    ranking = ncfast.rank_models({"m": model}, data, scores=["nc1", "h_score"])
    expected, _ = score_stats(stats["pre_logits"], ["nc1", "h_score"])
    for name, value in expected.items():
        assert ranking.scores["m"][name] == pytest.approx(value, rel=1e-8)
    profile = ncfast.finetune.nc_profile(model, data, stages)
    assert profile.layers == list(stages)
    assert profile[stages[-1]].nc1 == pytest.approx(ncfast.metrics.nc1(stats[stages[-1]]), rel=1e-8)


def test_stand_in_with_timms_feature_api():
    model = StandIn().eval()
    check_model(model, ["stem", "stage2"])
    assert nctimm.TimmFeatures(model).layers == ["stem", "stage1", "stage2", "pre_logits"]


def test_intermediates_only_and_layers_by_position():
    model = StandIn().eval()
    data = images(1)
    stats = nctimm.class_stats(model, data, layers=[1, -2], num_classes=K)
    assert list(stats) == ["stage1", "stage2"]


def test_a_module_without_the_api_is_refused():
    with pytest.raises(TypeError, match="timm model"):
        nctimm.TimmFeatures(nn.Linear(2, 2))
    assert not nctimm.is_timm_model(nn.Linear(2, 2)) and nctimm.is_timm_model(StandIn())


def test_a_real_timm_resnet():
    try:
        import timm
    except ImportError as err:  # timm 1.x imports torchvision, which needs a torch build of its own
        pytest.skip(f"timm does not import here ({err}); pip install 'ncfast[timm]'")
    model = timm.create_model("resnet18", pretrained=False, num_classes=K).eval()
    assert [f["module"] for f in model.feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    check_model(model, ["layer2", "layer4"])
