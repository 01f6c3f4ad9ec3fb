"""Neural collapse per layer while a small CNN trains on scikit-learn's digits.

NCMonitor watches four layers through forward hooks; after every epoch the epoch's statistics
are reported (``monitor.log``: history, and TensorBoard when --tensorboard is given), then
forgotten, so each point describes the features of one epoch. The figure is
``monitor.plot``'s; docs/nc_training.png was made with

    python examples/monitor_training.py --epochs 30 --plot docs/nc_training.png
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import ncfast

LAYERS = ["conv1", "conv2", "fc1", "fc2"]


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc2(self.fc1(self.conv2(self.conv1(x)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--plot", default="nc_training.png", help="PNG to write")
    parser.add_argument("--tensorboard", help="also log to this TensorBoard folder")
    args = parser.parse_args()

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    model = DigitsCNN()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    monitor = ncfast.NCMonitor(model, LAYERS, num_classes=10)
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard)

    for epoch in range(args.epochs):
        order = torch.randperm(len(y))
        correct = 0
        for start in range(0, len(y), 64):
            rows = order[start : start + 64]
            with monitor.labels(y[rows]):
                logits = model(x[rows])
            loss = nn.functional.cross_entropy(logits, y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            correct += int((logits.argmax(1) == y[rows]).sum())
        report = monitor.log(writer, step=epoch + 1, epoch=epoch)
        monitor.reset()
        print(f"epoch {epoch + 1:3d}  train acc {correct / len(y):.3f}  "
              + "  ".join(f"{r.layer} nc1 {r.nc1:.3g}" for r in report))
    monitor.plot(args.plot, xlabel="epoch")
    print(f"wrote {args.plot}")
    if writer is not None:
        writer.close()


if __name__ == "__main__":
    main()
