"""N-way K-shot episodes with and without the Fisher-ratio soft mask (DESIGN.md section 5).

Data: scikit-learn's 8x8 digits (bundled). Source classes 0-4 give whatever the features
need (a pre-trained network, standardisation statistics, a within-class variance prior);
episodes are 5-way on the novel classes 5-9, 15 queries per class, 600 episodes per shot
count (the same episodes for every method). Four feature sets:

  pixels      raw intensities / 16 (64-d)
  pixels-std  pixels standardised with the source classes' mean and std (64-d)
  cnn         penultimate features (128-d) of a small CNN trained on digits 0-4
  cnn-vcreg   the same CNN trained with VCReg after each block (examples/vcreg_pretraining.py)

For 5 and 20 shots the mask is fitted on the support set alone: importance from its
ClassStats, tau in {0, 1/8, ..., 1} by leave-one-out nearest-centroid accuracy. One-shot
supports have no within-class scatter and no leave-one-out, so there the within-class
variance comes from the source classes (within_prior) and tau is picked on 300 one-shot
episodes of the source classes (labels of novel classes never used). Classifiers: nearest
centroid (NCC) and an L2-regularised logistic probe (l2 = 1e-2 after scaling the features
to unit mean std). Reported: mean accuracy (%) +- 95% interval. For reference, an oracle
column: NCC with the mask of the importance computed on every novel row of the episode's
classes (tau = 0.5), i.e. what the mask could do if the importance were known.

    python examples/fewshot_soft_mask.py                 # a few minutes on 2 cores
    python examples/fewshot_soft_mask.py --episodes 100  # quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import ncfast
from ncfast.nn import VCReg
from ncfast.workflows.fewshot import (
    DEFAULT_TAUS, EpisodeSampler, feature_importance, fit_soft_mask, linear_probe, mean_ci95, nearest_centroid,
    soft_mask,
)

WAYS, QUERIES = 5, 15


def cnn_features(images: torch.Tensor, labels: torch.Tensor, source: torch.Tensor, *, vcreg: bool, seed: int = 0,
                 epochs: int = 30):
    """Trains conv-conv-fc (VCReg(1.0, 0.1) after each block if asked, as in
    examples/vcreg_pretraining.py) on the source rows; returns penultimate features of every row."""
    torch.manual_seed(seed)
    reg = (lambda: VCReg(1.0, 0.1)) if vcreg else nn.Identity
    body = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), reg(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(), reg(),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), reg(),
    )
    net = nn.Sequential(body, nn.Linear(128, 5))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    x, y = images[source], labels[source]
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            idx = perm[start : start + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return body.eval()(images).double()


def one_shot_tau(feats: torch.Tensor, labels: np.ndarray, prior: torch.Tensor, episodes: int = 300) -> float:
    """tau with the best NCC accuracy on one-shot episodes of the source classes."""
    acc = np.zeros(len(DEFAULT_TAUS))
    for ep in EpisodeSampler(labels, WAYS, 1, QUERIES, episodes=episodes, seed=12345):
        sx, qx = feats[ep.support], feats[ep.query]
        stats = ncfast.ClassStats(WAYS, feats.shape[1], per_class_diag=True).update(sx, torch.as_tensor(ep.support_y))
        r = feature_importance(stats, within_prior=prior, prior_rows=1.0)
        for t, tau in enumerate(DEFAULT_TAUS):
            acc[t] += (nearest_centroid(sx, ep.support_y, qx, mask=soft_mask(r, tau)).numpy() == ep.query_y).mean()
    return float(DEFAULT_TAUS[int(np.flatnonzero(acc == acc.max())[0])])


def run(name, feats, labels, source, shots_list, episodes):
    novel = ~source
    f_novel, y_novel = feats[novel], labels[novel]
    scale = float(feats[source].std(dim=0).mean())  # logistic probe: unit mean std, same for all
    f_src, y_src = feats[source], labels[source]
    src_stats = ncfast.ClassStats(5, feats.shape[1]).update(f_src, torch.as_tensor(y_src))
    prior = src_stats.sigma_w().diagonal()
    rows = []
    for shots in shots_list:
        start = time.perf_counter()
        tau_fixed = one_shot_tau(f_src, y_src, prior) if shots == 1 else None
        acc = {"ncc": [], "ncc+mask": [], "probe": [], "probe+mask": [], "ncc+oracle": []}
        taus = []
        for ep in EpisodeSampler(y_novel, WAYS, shots, QUERIES, episodes=episodes, seed=shots):
            sx, qx = f_novel[ep.support], f_novel[ep.query]
            # oracle: importance from every novel row of the episode's classes, tau = 0.5
            rows_all = torch.as_tensor(np.isin(y_novel, ep.classes))
            oracle = ncfast.ClassStats(10, feats.shape[1]).update(f_novel[rows_all], torch.as_tensor(y_novel[rows_all]))
            acc["ncc+oracle"].append((nearest_centroid(sx, ep.support_y, qx, mask=soft_mask(
                feature_importance(oracle), 0.5)).numpy() == ep.query_y).mean())
            if shots == 1:
                fitted = fit_soft_mask(sx, ep.support_y, tau=tau_fixed, within_prior=prior, prior_rows=1.0)
            else:
                fitted = fit_soft_mask(sx, ep.support_y)
            taus.append(fitted.tau)
            for key, mask in (("ncc", None), ("ncc+mask", fitted.mask)):
                acc[key].append((nearest_centroid(sx, ep.support_y, qx, mask=mask).numpy() == ep.query_y).mean())
            for key, mask in (("probe", None), ("probe+mask", fitted.mask)):
                pred = linear_probe(sx / scale, ep.support_y, qx / scale, mask=mask, l2=1e-2)
                acc[key].append((pred.numpy() == ep.query_y).mean())
        cells = {k: mean_ci95(100.0 * np.array(v)) for k, v in acc.items()}
        gain_ncc = 100.0 * (np.array(acc["ncc+mask"]) - np.array(acc["ncc"]))
        gain_probe = 100.0 * (np.array(acc["probe+mask"]) - np.array(acc["probe"]))
        rows.append((name, shots, cells, mean_ci95(gain_ncc), mean_ci95(gain_probe), np.mean(taus),
                     "fixed (source episodes)" if shots == 1 else "LOO"))
        print(f"{name:11s} {shots:2d}-shot  " + "  ".join(f"{k} {m:5.2f}+-{h:4.2f}" for k, (m, h) in cells.items())
              + f"  mean tau {np.mean(taus):.3f} ({time.perf_counter() - start:.0f}s)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--features", nargs="+", default=["pixels", "pixels-std", "cnn", "cnn-vcreg"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_digits()
    labels = data.target.astype(np.int64)
    source = labels < 5
    pixels = torch.tensor(data.data, dtype=torch.float64) / 16.0
    all_rows = []
    for name in args.features:
        if name == "pixels":
            feats = pixels
        elif name == "pixels-std":
            mu, sd = pixels[source].mean(dim=0), pixels[source].std(dim=0)
            feats = (pixels - mu) / sd.clamp(min=1e-3 * float(sd.max()))
        elif name in ("cnn", "cnn-vcreg"):
            images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
            feats = cnn_features(images, torch.as_tensor(labels), torch.as_tensor(source), vcreg=name == "cnn-vcreg")
        else:
            raise SystemExit(f"--features: unknown {name!r}")
        all_rows += run(name, feats, labels, source, args.shots, args.episodes)

    print(f"\n{WAYS}-way, {QUERIES} queries/class, {args.episodes} episodes; accuracy % (95% CI); "
          "gain = masked - plain on the same episodes")
    print("| features | shots | NCC | NCC + mask | gain | probe | probe + mask | gain | mean tau (how) "
          "| NCC + oracle mask |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, shots, cells, g_ncc, g_probe, tau, how in all_rows:
        c = {k: f"{m:.2f} +- {h:.2f}" for k, (m, h) in cells.items()}
        print(f"| {name} | {shots} | {c['ncc']} | {c['ncc+mask']} | {g_ncc[0]:+.2f} +- {g_ncc[1]:.2f} | "
              f"{c['probe']} | {c['probe+mask']} | {g_probe[0]:+.2f} +- {g_probe[1]:.2f} | {tau:.3f} ({how}) | "
              f"{c['ncc+oracle']} |")


if __name__ == "__main__":
    main()
