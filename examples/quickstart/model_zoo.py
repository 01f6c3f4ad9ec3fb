"""Way in 3 (set-up): a zoo of feature extractors for one target task, with their measured
accuracy, for `ncfast rank` and `ncfast.rank_models` to choose from.

Target task: scikit-learn's digits (10 classes), split in half. Each "model" maps the 8x8
images to features: the raw pixels, PCA to 4, 8 and 24 dimensions, a 2x2 blur, a random
ReLU projection, and a small network trained on digits 0-4 only. Its true quality on the task
is the test-half accuracy of a logistic regression trained on the train-half features. The
train-half features of each model are written as NAME.npy, with labels.npy and acc.json.

    python examples/quickstart/model_zoo.py zoo/       # under half a minute
"""

import json
import pathlib
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn


def models(x_train: torch.Tensor, y_train: torch.Tensor) -> dict:
    """{name: nn.Module mapping (N, 64) pixels to (N, D) features}."""
    torch.manual_seed(0)
    centred = x_train - x_train.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    zoo = {"pixels": nn.Identity()}
    for k in (4, 8, 24):
        pca = nn.Linear(64, k, bias=False)
        pca.weight.data = v[:k].clone()
        zoo[f"pca{k}"] = pca
    zoo["blur2x2"] = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.AvgPool2d(2), nn.Flatten())
    zoo["random_relu16"] = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
    source = y_train < 5  # a network that has seen only digits 0-4
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x_train[source]), y_train[source]).backward()
        opt.step()
    zoo["net_digits0to4"] = net[:2]
    for m in zoo.values():
        m.requires_grad_(False)
    return zoo


def split():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]
    return x[train], y[train], x[test], y[test]


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "zoo")
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = split()
    accuracy = {}
    for name, model in models(x_train, y_train).items():
        f_train, f_test = model(x_train).numpy(), model(x_test).numpy()
        probe = LogisticRegression(max_iter=2000).fit(f_train, y_train.numpy())
        accuracy[name] = round(float(probe.score(f_test, y_test.numpy())), 4)
        np.save(folder / f"{name}.npy", f_train.astype(np.float32))
        print(f"{name:<16} {f_train.shape[1]:>3} dims   linear-probe accuracy {accuracy[name]:.4f}")
    np.save(folder / "labels.npy", y_train.numpy())
    (folder / "acc.json").write_text(json.dumps(accuracy, indent=1) + "\n")
