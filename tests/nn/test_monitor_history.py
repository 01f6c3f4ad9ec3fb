"""NCMonitor's history of reports, its logging to TensorBoard / callables / Lightning-style
loggers, and the training plot."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from torch import nn

from ncfast import metrics
from ncfast.nn import NCMonitor
from ncfast.nn.history import NCHistory, scalars, write_scalars
from ncfast.plots import plot_training

K = 3


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)).eval()


def feed(monitor, model, seed, batches=3, rows=30):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(batches):
            y = torch.randint(0, K, (rows,), generator=gen)
            x = torch.randn(rows, 6, generator=gen) + 2.0 * y[:, None].float()
            with monitor.labels(y):
                model(x)


def test_record_appends_the_report_of_every_layer():
    model = make_model()
    monitor = NCMonitor(model, ["0", "2"], K)
    expected = {}
    for step in (10, 20):
        feed(monitor, model, seed=step)
        profile = monitor.record(step, epoch=step // 10)
        expected[step] = {n: metrics.nc1(monitor.stats[n]) for n in ("0", "2")}
        assert profile["2"].nc1 == pytest.approx(expected[step]["2"], rel=1e-12)
        monitor.reset()
    history = monitor.history
    assert history.layers == ["0", "2"] and history.steps == [10, 20]
    steps, values = history.series("2", "nc1")
    assert steps == [10, 20]
    assert values == pytest.approx([expected[10]["2"], expected[20]["2"]], rel=1e-12)
    assert [r["epoch"] for r in history.records] == [1, 1, 2, 2]
    assert all(r["num_samples"] == 90 for r in history.records)


def test_record_without_step_counts_on_from_the_last():
    model = make_model()
    monitor = NCMonitor(model, ["2"], K)
    feed(monitor, model, 0)
    monitor.record()
    monitor.record(7)
    monitor.record()
    assert monitor.history.steps == [0, 7, 8]


class MetricsLogger:
    def __init__(self):
        self.calls = []

    def log_metrics(self, values, step):
        self.calls.append((dict(values), step))


def test_log_writes_every_defined_score_to_each_kind_of_logger():
    model = make_model()
    monitor = NCMonitor(model, ["0", "2"], K)
    feed(monitor, model, 1)
    called = []
    lightning_like = MetricsLogger()
    profile = monitor.log([lambda values, step: called.append((values, step)), lightning_like], step=5,
                          scores=("nc1", "cdnv"))
    values, step = called[0]
    assert step == 5 and lightning_like.calls == [(values, 5)]
    assert set(values) == {"nc/0/nc1", "nc/0/cdnv", "nc/2/nc1", "nc/2/cdnv"}
    assert values["nc/2/cdnv"] == pytest.approx(profile["2"].cdnv, rel=1e-12)
    assert values["nc/0/nc1"] == pytest.approx(metrics.nc1(monitor.stats["0"]), rel=1e-12)


def test_log_to_a_tensorboard_summary_writer(tmp_path):
    tensorboard = pytest.importorskip("torch.utils.tensorboard", reason="tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_model()
    monitor = NCMonitor(model, ["2"], K)
    writer = tensorboard.SummaryWriter(str(tmp_path))
    logged = []
    for step in (1, 2):
        feed(monitor, model, step)
        logged.append(monitor.log(writer, step)["2"].nc1)
        monitor.reset()
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    read = events.Scalars("nc/2/nc1")
    assert [e.step for e in read] == [1, 2]
    np.testing.assert_allclose([e.value for e in read], logged, rtol=1e-6)  # stored as float32


def test_undefined_scores_are_not_logged():
    model = make_model()
    monitor = NCMonitor(model, ["0"], K)
    with monitor.labels(torch.zeros(4, dtype=torch.int64)), torch.no_grad():
        model(torch.randn(4, 6))  # one class: every score undefined
    assert scalars(monitor.report()) == {}
    called = []
    monitor.log(lambda values, step: called.append(values), 0)
    assert called == [] and len(monitor.history) == 1 and monitor.history.records[0]["nc1"] is None


def test_bad_logger_and_scores_are_rejected():
    model = make_model()
    monitor = NCMonitor(model, ["0"], K)
    feed(monitor, model, 0)
    with pytest.raises(TypeError, match="logger"):
        write_scalars(object(), {"a": 1.0}, 0)
    with pytest.raises(ValueError, match="scores: unknown"):
        monitor.log(None, 0, scores=("accuracy",))
    assert len(monitor.history) == 0  # a rejected log records nothing
    monitor.record(0)
    with pytest.raises(ValueError, match="score: unknown"):
        monitor.history.series("0", "accuracy")
    with pytest.raises(KeyError, match="no record"):
        monitor.history.series("1", "nc1")


def test_history_survives_the_state_dict():
    model = make_model()
    monitor = NCMonitor(model, ["0", "2"], K)
    for step in range(3):
        feed(monitor, model, step)
        monitor.record(step)
    buffer = io.BytesIO()
    torch.save(monitor.state_dict(), buffer)
    buffer.seek(0)
    resumed = NCMonitor(make_model(), ["0", "2"], K).load_state_dict(torch.load(buffer))
    assert resumed.history.records == monitor.history.records
    monitor.reset(history=True)
    assert len(monitor.history) == 0 and len(resumed.history) == 6


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_one_panel_per_score(tmp_path):
    pytest.importorskip("matplotlib")
    model = make_model()
    monitor = NCMonitor(model, ["0", "2"], K)
    for step in range(4):
        feed(monitor, model, step)
        monitor.record(step)
    monitor.plot(str(tmp_path / "one.png"), scores=("nc1",))
    monitor.plot(str(tmp_path / "three.png"))
    w1, h1 = png_size(tmp_path / "one.png")
    w3, h3 = png_size(tmp_path / "three.png")
    assert w3 > 2 * w1 and abs(h3 - h1) < 0.2 * h1


def test_plot_rejects_empty_history_and_unknown_names(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no report"):
        plot_training(NCHistory(), str(tmp_path / "x.png"))
    records = [{"step": 0, "layer": "a", "nc1": 1.0}]
    with pytest.raises(ValueError, match="scores: unknown"):
        plot_training(records, str(tmp_path / "x.png"), scores=("accuracy",))
    with pytest.raises(ValueError, match="layers: no record"):
        plot_training(records, str(tmp_path / "x.png"), scores=("nc1",), layers=["b"])
    assert not (tmp_path / "x.png").exists()
