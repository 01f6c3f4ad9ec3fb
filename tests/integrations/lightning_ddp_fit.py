"""A 2-process CPU DDP fit (Trainer(strategy="ddp", accelerator="cpu", devices=2)) with a
ClassStatsMetric and an NCMonitorCallback; rank 0 saves what they computed to OUT/result.pt.
Run by tests/integrations/test_integration_lightning.py as `python lightning_ddp_fit.py OUT`
(Lightning's DDP launcher starts the second process by running this script again)."""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl

from ncfast.integrations import ClassStatsMetric, NCMonitorCallback

ROWS, DIM, K = 240, 5, 4  # ROWS divisible by 2 ranks x batch 20: every row seen exactly once per epoch


def dataset():
    gen = torch.Generator().manual_seed(7)
    y = torch.randint(0, K, (ROWS,), generator=gen)
    x = torch.randn(ROWS, DIM, generator=gen, dtype=torch.float64) + 3.0 * nn.functional.one_hot(y, DIM) + 20.0
    return x, y


def frozen_layer():
    torch.manual_seed(3)
    layer = nn.Linear(DIM, 6).double()
    layer.requires_grad_(False)
    return layer


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.frozen = frozen_layer()  # monitored: the same features on every rank and in the reference
        self.head = nn.Linear(6, K).double()
        self.metric = ClassStatsMetric(K, DIM, scores=("nc1", "cdnv"))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.metric.update(x, y)
        return nn.functional.cross_entropy(self.head(torch.relu(self.frozen(x))), y)

    def on_train_epoch_end(self):
        self.scores = {k: float(v) for k, v in self.metric.compute().items()}
        with self.metric.sync_context():
            self.synced = self.metric.class_stats().state_dict()

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def main(out: str) -> None:
    x, y = dataset()
    module = Module()
    callback = NCMonitorCallback(["frozen"], K, every_n_epochs=1, transfer_scores=("logme",))
    trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback])
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=20, shuffle=False))
    if trainer.global_rank == 0:
        torch.save({"scores": module.scores, "synced": module.synced, "history": callback.monitor.history.records},
                   f"{out}/result.pt")


if __name__ == "__main__":
    main(sys.argv[1])
