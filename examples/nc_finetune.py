"""NC-guided fine-tuning of one block, against full fine-tuning and linear probing.

A small residual CNN (6 equal blocks) is pre-trained on scikit-learn's digits 0-4 (source). The downstream task
is digits 5-9 with few labels per class. The NC profile of the pre-trained blocks on the
downstream training data (one pass, NCMonitor) picks the block to adapt (ncfast.finetune's
rule); that block, a zero-initialised skip projection from it to the head, and the head are
fine-tuned (Li et al., arXiv 2212.12206). Compared on the same splits and seeds with a linear
probe (head only), full fine-tuning, the chosen block without the skip, and skip fine-tuning
of every other block (to see where the rule's choice lands).

    python examples/nc_finetune.py              # 10 labels per class, 3 seeds: 1-1.5 minutes
    python examples/nc_finetune.py --shots 30   # more downstream labels
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from ncfast.workflows.finetune import SkipToHead, choose_layer, count_parameters, freeze_all_but, nc_profile

DEPTH, WIDTH = 6, 32
BLOCKS = [f"block{i}" for i in range(1, DEPTH + 1)]


class Residual(nn.Module):
    """x + conv(relu(conv(x))), then ReLU: a basic residual block of constant width."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class ResCNN(nn.Module):
    """A stem, DEPTH residual blocks of equal width (a 2x2 max-pool after the middle one),
    global average pooling and a linear head: every block is about 1/DEPTH of the parameters,
    as in ResNet stages or ViT blocks."""

    def __init__(self, classes: int = 5, width: int = WIDTH, depth: int = DEPTH):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        for i in range(1, depth + 1):
            block = Residual(width)
            setattr(self, f"block{i}", nn.Sequential(block, nn.MaxPool2d(2)) if i == depth // 2 else block)
        self.depth = depth
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem(x)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"block{i}")(x)
        return self.fc(self.pool(x))


def data():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    src = y < 5
    return x[src], y[src], x[~src], y[~src] - 5


def few_shot(x, y, shots: int, seed: int):
    """`shots` training images per class; every other image is test data."""
    gen = torch.Generator().manual_seed(seed)
    train = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=gen)[:shots]]
                       for c in range(5)])
    test = torch.ones(len(y), dtype=torch.bool)
    test[train] = False
    return x[train], y[train], x[test], y[test]


def fit(model: nn.Module, x, y, *, epochs: int, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 32):
            idx = perm[start : start + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def transfer(pretrained: ResCNN, method: str, block: str, xtr, ytr, xte, yte, *, epochs: int, seed: int):
    """(test accuracy, ParamCount) of one fine-tuning method."""
    torch.manual_seed(seed)
    model = copy.deepcopy(pretrained)
    model.fc = nn.Linear(model.fc.in_features, 5)  # a new head for the new classes
    if method == "linear probe":
        count = freeze_all_but(model, "fc")
    elif method == "full fine-tune":
        count = freeze_all_but(model, "")  # "" names the model itself: everything trains
    elif method == "block, no skip":
        count = freeze_all_but(model, block, "fc")
    else:  # block + skip
        model = SkipToHead(model, block, "fc", example_input=xtr[:2])
        count = freeze_all_but(model, f"model.{block}", "model.fc", "skip")
    fit(model, xtr, ytr, epochs=epochs, lr=1e-3, seed=seed)
    return accuracy(model, xte, yte), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=10, help="downstream training images per class")
    parser.add_argument("--seeds", type=int, default=3, help="few-shot draws (and head initialisations)")
    parser.add_argument("--epochs", type=int, default=100, help="fine-tuning epochs (every method)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, and kind to a shared machine
    t0 = time.perf_counter()
    xs, ys, xt, yt = data()
    torch.manual_seed(0)
    pretrained = ResCNN()
    fit(pretrained, xs, ys, epochs=60, lr=1e-3, seed=0)
    print(f"pre-trained on digits 0-4 ({len(ys)} images): source accuracy {accuracy(pretrained, xs, ys):.3f}, "
          f"{count_parameters(pretrained).total:,} parameters")

    sweep = [f"{b} + skip" for b in BLOCKS]
    acc = {m: [] for m in ["linear probe", "full fine-tune", "NC-chosen block + skip", "NC-chosen block, no skip"] + sweep}
    params, chosen, stalls = {}, [], []
    for seed in range(args.seeds):
        xtr, ytr, xte, yte = few_shot(xt, yt, args.shots, seed)
        profile = nc_profile(pretrained, (xtr, ytr), BLOCKS)  # one pass over the downstream data
        block = choose_layer(profile)
        chosen.append(block)
        stalls.append(choose_layer(profile, rule="first_stall"))
        if seed == 0:
            print(f"\nNC profile of the pre-trained blocks on the downstream training data "
                  f"(digits 5-9, {args.shots} per class; seed 0):\n{profile}")
        runs = [("linear probe", "linear probe", block), ("full fine-tune", "full fine-tune", block),
                ("NC-chosen block, no skip", "block, no skip", block)]
        runs += [(f"{b} + skip", "block + skip", b) for b in BLOCKS]
        for name, method, b in runs:
            a, count = transfer(pretrained, method, b, xtr, ytr, xte, yte, epochs=args.epochs, seed=seed)
            acc[name].append(a)
            params[name if "NC-chosen" not in name else f"{b}, no skip"] = count
        acc["NC-chosen block + skip"].append(acc[f"{block} + skip"][-1])

    print(f"\nNC-chosen block per seed (most_collapsed): {', '.join(chosen)}; "
          f"the first_stall rule would pick: {', '.join(stalls)}")
    print(f"\ndownstream test accuracy, digits 5-9 with {args.shots} labels per class, mean +- sd over "
          f"{args.seeds} seeds ({args.epochs} epochs of Adam, lr 1e-3, batch 32, for every method):")
    print(f"{'method':<26}{'accuracy':>16}{'trained params':>16}{'fraction':>10}")
    for name, accs in acc.items():
        if name == "NC-chosen block + skip":
            counts = [params[f"{b} + skip"] for b in chosen]
        elif name == "NC-chosen block, no skip":
            counts = [params[f"{b}, no skip"] for b in chosen]
        else:
            counts = [params[name]]
        n = sorted({c.trainable for c in counts})
        frac = np.mean([c.fraction for c in counts])
        cell = f"{n[0]:,}" if len(n) == 1 else f"{n[0]:,}-{n[-1]:,}"
        print(f"{name:<26}{np.mean(accs):>9.3f} +- {np.std(accs):.3f}{cell:>16}{100 * frac:>9.1f}%")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
