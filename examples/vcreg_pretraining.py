"""Supervised pre-training with and without VCReg, then transfer by linear probing.

Source task: digits 0-4 of scikit-learn's 8x8 digits (bundled, nothing downloaded). Target
task: digits 5-9, never seen in pre-training. A small CNN is pre-trained on (a training
split of) the source classes, with VCReg after each block (conv maps regularised per
spatial position) or without; its penultimate features are then frozen and

  * NC1 of the source training features (ncfast.ClassStats + ncfast.metrics.nc1),
  * source test accuracy of the pre-trained head,
  * target accuracy of an L2-regularised logistic probe fitted on half of the target rows
    (all of them, and 10 per class) and tested on the other half

are reported per seed and as mean +- std over seeds.

    python examples/vcreg_pretraining.py                    # 5 seeds, under a minute
    python examples/vcreg_pretraining.py --seeds 2 --epochs 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import ncfast
from ncfast import metrics
from ncfast.workflows.fewshot import linear_probe
from ncfast.nn import VCReg


def load(seed_split: int = 0):
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(data.target, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed_split)
    order = torch.randperm(len(labels), generator=gen)
    images, labels = images[order], labels[order]
    source, target = labels < 5, labels >= 5
    src_x, src_y = images[source], labels[source]
    tgt_x, tgt_y = images[target], labels[target] - 5
    n_src, n_tgt = len(src_y) * 3 // 4, len(tgt_y) // 2
    src_train, src_test = (src_x[:n_src], src_y[:n_src]), (src_x[n_src:], src_y[n_src:])
    tgt_train, tgt_test = (tgt_x[:n_tgt], tgt_y[:n_tgt]), (tgt_x[n_tgt:], tgt_y[n_tgt:])
    return src_train, src_test, tgt_train, tgt_test


class Net(nn.Module):
    """conv(1->32) - conv(32->64, stride 2) - fc(1024->128) - head(128->5), ReLU after each block;
    VCReg on each block's output when alpha or beta > 0."""

    def __init__(self, alpha: float, beta: float):
        super().__init__()
        reg = (lambda: VCReg(alpha, beta)) if (alpha or beta) else nn.Identity
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), reg(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(), reg(),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), reg(),
        )
        self.head = nn.Linear(128, 5)

    def forward(self, x):
        return self.head(self.features(x))


def pretrain(train, alpha, beta, seed, epochs, batch=64):
    torch.manual_seed(seed)
    net = Net(alpha, beta)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    x, y = train
    vc_log = []
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for start in range(0, len(y), batch):
            idx = perm[start : start + batch]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        regs = [m for m in net.modules() if isinstance(m, VCReg)]
        if regs:
            vc_log.append(sum(float(m.last_loss) for m in regs))
    return net.eval(), vc_log


@torch.no_grad()
def features(net, x):
    return net.features(x).double()


def evaluate(net, splits, probe_l2):
    src_train, src_test, tgt_train, tgt_test = splits
    f_src = features(net, src_train[0])
    stats = ncfast.ClassStats(5, f_src.shape[1]).update(f_src, src_train[1])
    out = {"nc1_source": metrics.nc1(stats)}
    with torch.no_grad():
        out["source_test_acc"] = float((net(src_test[0]).argmax(1) == src_test[1]).double().mean())
    f_tr, f_te = features(net, tgt_train[0]), features(net, tgt_test[0])
    scale = f_tr.std(dim=0).mean().clamp(min=1e-12)  # same feature scale for every model
    pred = linear_probe(f_tr / scale, tgt_train[1], f_te / scale, l2=probe_l2)
    out["target_probe_acc"] = float((pred == tgt_test[1]).double().mean())
    # 10 labelled target rows per class
    few = torch.cat([torch.nonzero(tgt_train[1] == c).flatten()[:10] for c in range(5)])
    pred = linear_probe(f_tr[few] / scale, tgt_train[1][few], f_te / scale, l2=probe_l2)
    out["target_probe_acc_10shot"] = float((pred == tgt_test[1]).double().mean())
    tgt_stats = ncfast.ClassStats(5, f_tr.shape[1]).update(f_tr, tgt_train[1])
    out["nc1_target"] = metrics.nc1(tgt_stats)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=1.0, help="VCReg variance weight")
    parser.add_argument("--beta", type=float, default=0.1, help="VCReg covariance weight")
    parser.add_argument("--probe-l2", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load()
    print(f"source train/test {len(splits[0][1])}/{len(splits[1][1])} rows (digits 0-4), "
          f"target train/test {len(splits[2][1])}/{len(splits[3][1])} rows (digits 5-9)")
    configs = {"plain": (0.0, 0.0), f"VCReg(alpha={args.alpha}, beta={args.beta})": (args.alpha, args.beta)}
    keys = ["nc1_source", "nc1_target", "source_test_acc", "target_probe_acc", "target_probe_acc_10shot"]
    results = {name: [] for name in configs}
    for seed in range(args.seeds):
        for name, (alpha, beta) in configs.items():
            start = time.perf_counter()
            net, vc_log = pretrain(splits[0], alpha, beta, seed, args.epochs)
            res = evaluate(net, splits, args.probe_l2)
            results[name].append(res)
            extra = f" VCReg loss first/last epoch {vc_log[0]:.3f}/{vc_log[-1]:.3f}" if vc_log else ""
            print(f"seed {seed} {name:28s} " + " ".join(f"{k}={res[k]:.4f}" for k in keys)
                  + f" ({time.perf_counter() - start:.1f}s){extra}", flush=True)

    print(f"\nmean +- std over {args.seeds} seeds")
    print(f"{'model':30s}" + "".join(f"{k:>26s}" for k in keys))
    for name, rows in results.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rows])
            cells.append(f"{v.mean():.4f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}")
        print(f"{name:30s}" + "".join(f"{c:>26s}" for c in cells))
    names = list(results)
    wins = sum(b["target_probe_acc"] > a["target_probe_acc"] for a, b in zip(results[names[0]], results[names[1]]))
    print(f"\nVCReg's target probe accuracy above the plain model's in {wins} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
