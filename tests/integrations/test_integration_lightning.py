"""NCMonitorCallback in Lightning fits: what it logs equals the scores of the training features
captured independently; a fit resumed from a checkpoint logs what an uninterrupted one does; a
2-process CPU DDP fit (with a ClassStatsMetric too) equals one process seeing every row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install 'ncfast[lightning]')")

import ncfast  # noqa: E402
from ncfast import metrics  # noqa: E402
from ncfast.integrations import NCMonitorCallback  # noqa: E402
import reference_scores as ref  # noqa: E402

K, DIM = 3, 4


def loader(rows=120, batch=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (rows,), generator=gen)
    x = torch.randn(rows, DIM, generator=gen) + 2.0 * nn.functional.one_hot(y, DIM).float()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, K))
        self.captured = []  # (epoch, features of net.3 in the training forward, labels): the independent path
        self.net[3].register_forward_hook(lambda m, i, o: self.captured.append((self.current_epoch, o.detach().double())))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def trainer(tmp_path, epochs, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), **kwargs)


def test_logged_scores_equal_those_of_the_captured_training_features(tmp_path):
    module, data = Net(), loader()
    callback = NCMonitorCallback(["net.1", "net.3"], K, every_n_epochs=1, transfer_scores=("logme",))
    trainer(tmp_path, 3, callbacks=[callback], enable_checkpointing=False).fit(module, data)
    labels = torch.cat([y for _, y in data]).numpy()
    history = callback.monitor.history
    assert history.steps == [6, 12, 18] and history.layers == ["net.1", "net.3"]
    steps, values = history.series("net.3", "nc1")
    for epoch, value in enumerate(values):
        feats = torch.cat([f for e, f in module.captured if e == epoch]).numpy()
        assert value == pytest.approx(ref.nc1(feats, labels), rel=1e-6)
    last = torch.cat([f for e, f in module.captured if e == 2]).numpy()
    record = history.records[-1]
    assert record["layer"] == "net.3" and record["cdnv"] == pytest.approx(ref.cdnv(last, labels), rel=1e-6)
    assert record["logme"] == pytest.approx(ref.logme(last, labels), rel=1e-4)


def test_logs_reach_the_logger_every_n_steps(tmp_path):
    class Collect(pl.loggers.Logger):
        def __init__(self):
            super().__init__()
            self.rows = []

        name, version = "collect", 0

        def log_metrics(self, metrics, step):
            self.rows.append((step, dict(metrics)))

        def log_hyperparams(self, *args, **kwargs):
            pass

    collect = Collect()
    callback = NCMonitorCallback(["net.3"], K, every_n_steps=4, every_n_epochs=None)
    pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=collect, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1,
               callbacks=[callback]).fit(Net(), loader())
    assert callback.monitor.history.steps == [4, 8, 12]
    logged = {step: m["nc/net.3/nc1"] for step, m in collect.rows if "nc/net.3/nc1" in m}
    assert logged == dict(zip(*callback.monitor.history.series("net.3", "nc1")))


def test_resumed_fit_logs_what_an_uninterrupted_fit_logs(tmp_path):
    def callback():
        return NCMonitorCallback(["net.1", "net.3"], K, every_n_epochs=2, per_class_diag=True)

    whole = callback()
    trainer(tmp_path / "whole", 4, callbacks=[whole], enable_checkpointing=False).fit(Net(), loader())

    first = callback()
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1,
                                         filename="{epoch}")
    trainer(tmp_path / "first", 1, callbacks=[first, saver]).fit(Net(), loader())
    assert len(first.monitor.history) == 0 and first.monitor.stats["net.3"].num_samples == 120  # a window half full
    resumed = callback()
    trainer(tmp_path / "resumed", 4, callbacks=[resumed]).fit(Net(), loader(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert resumed.monitor.history.steps == whole.monitor.history.steps == [12, 24]
    for a, b in zip(resumed.monitor.history.records, whole.monitor.history.records):
        assert a["num_samples"] == b["num_samples"] == 240
        for score in ("nc1", "cdnv", "nc2_etf"):
            assert a[score] == pytest.approx(b[score], rel=1e-10)


def test_labels_from_dict_batches_and_bad_options():
    from ncfast.integrations.lightning import default_labels

    y = torch.arange(3)
    assert default_labels({"x": 0, "labels": y}) is y and default_labels((0, y)) is y
    with pytest.raises(ValueError, match="labels"):
        default_labels({"x": 0})
    with pytest.raises(ValueError, match="every_n_steps"):
        NCMonitorCallback(["a"], K, every_n_steps=0)
    with pytest.raises(ValueError, match="give at least one"):
        NCMonitorCallback(["a"], K, every_n_steps=None, every_n_epochs=None)
    with pytest.raises(ValueError, match="transfer_scores: unknown"):
        NCMonitorCallback(["a"], K, transfer_scores=("nc1",))


def test_ddp_fit_on_two_cpu_processes_equals_one_process(tmp_path):
    pytest.importorskip("torchmetrics")
    script = Path(__file__).with_name("lightning_ddp_fit.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    sys.path.insert(0, str(script.parent))
    try:
        import lightning_ddp_fit as fit
    finally:
        sys.path.pop(0)
    x, y = fit.dataset()
    # the metric saw the raw float64 rows of both ranks
    whole = ncfast.ClassStats(fit.K, fit.DIM).update(x, y)
    synced = ncfast.ClassStats(fit.K, fit.DIM).load_state_dict(result["synced"])
    assert torch.equal(synced.counts, whole.counts)
    for name in ("means", "within_scatter", "class_scatter"):
        a, b = getattr(synced, name), getattr(whole, name)
        assert float((a - b).norm() / b.norm()) < 1e-12, name
    assert result["scores"]["nc1"] == pytest.approx(metrics.nc1(whole), rel=1e-12)
    assert result["scores"]["cdnv"] == pytest.approx(metrics.cdnv(whole), rel=1e-12)
    # the callback's all-reduced window equals the frozen layer's features of every row in one process
    with torch.no_grad():
        feats = fit.frozen_layer()(x)
    layer = ncfast.ClassStats(fit.K, feats.shape[1]).update(feats, y)
    record = result["history"][-1]
    assert record["num_samples"] == fit.ROWS
    assert record["nc1"] == pytest.approx(metrics.nc1(layer), rel=1e-12)
    assert record["cdnv"] == pytest.approx(metrics.cdnv(layer), rel=1e-12)
    assert record["logme"] == pytest.approx(metrics.logme(layer), rel=1e-10)
