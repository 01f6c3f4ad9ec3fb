"""Does each transferability score rank a zoo of models as their real transfer accuracy does?

Source task: scikit-learn's digits, classes 0-4. Target task: classes 5-9 (new classes, same
kind of images), split in half: target-train (scores, probe and fine-tuning data) and
target-test (accuracy). A zoo of small networks that differ in width, depth, loss (cross-
entropy, label smoothing, MSE), source-data subset and training length is trained on the
source; then, as in You et al. (LogME) and the later papers, each model's scores on the
target-train features (and, for LEEP and NCE, its source head's predictions on them) are compared with its measured transfer accuracy (a linear probe, and
a short full fine-tuning averaged over seeds) by Kendall's tau and the weighted tau.

    python examples/rank_models.py             # about a minute on one CPU core
    python examples/rank_models.py --seeds 3   # three zoos (other initialisations and split)
    python examples/rank_models.py --quick     # fewer epochs and seeds (a smoke run)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from ncfast.workflows.ranking import rank_models

# ---------------------------------------------------------------------------------- data


def digits_split(seed: int = 0):
    """(source_x, source_y, target_train_x, target_train_y, target_test_x, target_test_y);
    images as (N, 1, 8, 8) float32 in [0, 1], target labels renumbered 0-4."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    src = y < 5
    xs, ys = x[src], y[src]
    xt, yt = x[~src], y[~src] - 5
    perm = torch.randperm(len(yt), generator=torch.Generator().manual_seed(seed))
    half = len(yt) // 2
    tr, te = perm[:half], perm[half:]
    return xs, ys, xt[tr], yt[tr], xt[te], yt[te]


# ---------------------------------------------------------------------------------- the zoo


def mlp(width: int, depth: int) -> nn.Module:
    layers, d = [nn.Flatten()], 64
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers)


def cnn(channels: int) -> nn.Module:
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


@dataclass
class Spec:
    name: str
    trunk: str  # "mlp:width:depth" or "cnn:channels"
    loss: str = "ce"  # ce | smooth | mse
    subset: float = 1.0  # fraction of the source data
    epochs: int = 30


ZOO = [
    Spec("mlp32x1", "mlp:32:1"),
    Spec("mlp128x1", "mlp:128:1"),
    Spec("mlp128x3", "mlp:128:3"),
    Spec("mlp256x2-smooth", "mlp:256:2", loss="smooth"),
    Spec("mlp128x2-mse", "mlp:128:2", loss="mse"),
    Spec("mlp128x2-10%", "mlp:128:2", subset=0.1),
    Spec("mlp16x2-long", "mlp:16:2", epochs=200),
    Spec("cnn8", "cnn:8"),
    Spec("cnn32", "cnn:32"),
    Spec("cnn32-smooth", "cnn:32", loss="smooth"),
    Spec("cnn16-mse", "cnn:16", loss="mse"),
    Spec("cnn16-10%", "cnn:16", subset=0.1),
    Spec("cnn16-1epoch", "cnn:16", epochs=1),
]


def build(spec: Spec) -> nn.Module:
    kind, *args = spec.trunk.split(":")
    return mlp(int(args[0]), int(args[1])) if kind == "mlp" else cnn(int(args[0]))


def feature_dim(trunk: nn.Module) -> int:
    with torch.no_grad():
        return trunk(torch.zeros(1, 1, 8, 8)).shape[1]


def loss_fn(kind: str, classes: int):
    if kind == "ce":
        return nn.CrossEntropyLoss()
    if kind == "smooth":
        return nn.CrossEntropyLoss(label_smoothing=0.3)
    if kind == "mse":
        return lambda logits, y: nn.functional.mse_loss(logits, nn.functional.one_hot(y, classes).float())
    raise ValueError(kind)


def train(trunk: nn.Module, x, y, classes: int, *, epochs: int, loss: str = "ce", lr: float = 1e-3, seed: int = 0):
    """Trunk + a fresh linear head, all trained with Adam; returns the trained head."""
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(feature_dim(trunk), classes)
    model = nn.Sequential(trunk, head).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = loss_fn(loss, classes)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            idx = perm[start : start + 64]
            opt.zero_grad()
            criterion(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return head


def accuracy(model: nn.Module, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ---------------------------------------------------------------------------------- transfer


def features(trunk, x) -> np.ndarray:
    with torch.no_grad():
        return trunk.eval()(x).double().numpy()


def linear_probe(trunk, xtr, ytr, xte, yte) -> float:
    scaler = StandardScaler().fit(features(trunk, xtr))
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(features(trunk, xtr)), ytr.numpy())
    return float(clf.score(scaler.transform(features(trunk, xte)), yte.numpy()))


def fine_tune(trunk, xtr, ytr, xte, yte, *, epochs: int, seeds: int) -> float:
    accs = []
    for seed in range(seeds):
        torch.manual_seed(100 + seed)
        net = copy.deepcopy(trunk)
        head = train(net, xtr, ytr, 5, epochs=epochs, lr=1e-3, seed=100 + seed)
        accs.append(accuracy(nn.Sequential(net, head), xte, yte))
    return float(np.mean(accs))


def run_once(seed: int, quick: bool, verbose: bool) -> dict:
    """Trains the zoo (initialisations and target split drawn from `seed`), scores it, measures
    transfer; returns every number."""
    t0 = time.perf_counter()
    xs, ys, xtr, ytr, xte, yte = digits_split(seed)
    if verbose:
        print(f"source: {len(ys)} images of digits 0-4; target: digits 5-9, {len(ytr)} train / {len(yte)} test")
    trunks, heads, source_acc = {}, {}, {}
    for i, spec in enumerate(ZOO):
        torch.manual_seed(1000 * seed + i)
        gen = torch.Generator().manual_seed(1000 * seed + i)
        keep = torch.randperm(len(ys), generator=gen)[: max(50, int(spec.subset * len(ys)))]
        trunk = build(spec)
        epochs = spec.epochs if not quick else max(1, min(spec.epochs, 10))
        head = train(trunk, xs[keep], ys[keep], 5, epochs=epochs, loss=spec.loss, seed=1000 * seed + i)
        source_acc[spec.name] = accuracy(nn.Sequential(trunk, head), xs, ys)
        trunks[spec.name] = trunk.eval()
        heads[spec.name] = head.eval()  # the source classifier, for LEEP and NCE
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    ranking = rank_models(trunks, xtr, ytr, source_heads=heads, batch_size=256)
    score_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    probe = {n: linear_probe(t, xtr, ytr, xte, yte) for n, t in trunks.items()}
    ft_epochs, ft_seeds = (5, 1) if quick else (30, 3)
    tuned = {n: fine_tune(t, xtr, ytr, xte, yte, epochs=ft_epochs, seeds=ft_seeds) for n, t in trunks.items()}
    measure_s = time.perf_counter() - t2
    taus = {
        "probe_kendall": ranking.correlation(probe, "kendall"),
        "probe_weighted": ranking.correlation(probe, "weighted"),
        "finetune_kendall": ranking.correlation(tuned, "kendall"),
        "finetune_weighted": ranking.correlation(tuned, "weighted"),
    }
    if verbose:
        print(f"trained {len(ZOO)} source models in {train_s:.0f} s")
        print(f"\nscores on target-train features ({score_s:.1f} s for all {len(ZOO)} models):")
        print(ranking)
        print(f"\nmeasured transfer ({measure_s:.0f} s): target-test accuracy "
              f"(fine-tune: {ft_epochs} epochs, mean of {ft_seeds} seeds)")
        print(f"{'model':<18}{'source acc':>11}{'linear probe':>14}{'fine-tune':>11}")
        for n in trunks:
            print(f"{n:<18}{source_acc[n]:>11.3f}{probe[n]:>14.3f}{tuned[n]:>11.3f}")
    return {"seed": seed, "ranking": ranking, "source_acc": source_acc, "probe": probe, "finetune": tuned,
            "taus": taus, "seconds": {"train": train_s, "scores": score_s, "measure": measure_s}}


def print_taus(runs) -> None:
    keys = ["probe_kendall", "probe_weighted", "finetune_kendall", "finetune_weighted"]
    names = runs[0]["ranking"].score_names
    n = len(runs)
    print(f"\nrank correlation of each score with measured target accuracy ({len(ZOO)} models"
          + (f"; mean +- sd over {n} zoo seeds" if n > 1 else "") + "; +1 = ranks the zoo exactly as measured)")
    print(f"{'score':<19}" + "".join(f"{h:>17}" for h in ("probe tau", "probe tau_w", "fine-tune tau", "fine-tune tau_w")))
    for s in names:
        cells = []
        for k in keys:
            vals = [r["taus"][k][s] for r in runs if r["taus"][k][s] is not None]
            if not vals:
                cells.append("n/a")
            elif n == 1:
                cells.append(f"{vals[0]:+.3f}")
            else:
                cells.append(f"{np.mean(vals):+.3f} +- {np.std(vals):.2f}")
        print(f"{s:<19}" + "".join(f"{c:>17}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and seeds (a smoke run)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with this many zoo seeds (about a minute each)")
    parser.add_argument("--json", help="write all numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and kind to a shared machine
    t0 = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        if args.seeds > 1:
            print(f"\n=== zoo seed {seed} ===")
        runs.append(run_once(seed, args.quick, verbose=True))
    print_taus(runs)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        payload = [{**r, "ranking": r["ranking"].to_dict()} for r in runs]
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
