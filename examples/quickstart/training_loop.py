"""Way in 1: neural collapse of a model while it trains, from inside the training loop.

A small MLP learns scikit-learn's digits (1,797 8x8 images, 10 classes, shipped with
scikit-learn). An NCMonitor keeps one ClassStats per chosen layer through forward hooks;
after each epoch it reports NC1 and friends per layer, then starts over for the next one.
A plain ClassStats beside it shows the same statistics kept by hand.

    python examples/quickstart/training_loop.py          # 20 s on a busy 2-core machine
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

import ncfast

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0            # (1797, 64)
y = torch.tensor(digits.target, dtype=torch.int64)                   # (1797,)

body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
head = nn.Linear(64, 10)
model = nn.Sequential(body, head)
optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
monitor = ncfast.NCMonitor(model, ["0.1", "0.3"], num_classes=10)   # the two hidden layers' outputs
penultimate = ncfast.ClassStats(num_classes=10, dim=64)              # layer 0.3 again, kept by hand

for epoch in range(1, 31):
    monitor.reset()
    penultimate.reset()
    for batch in torch.randperm(len(y)).split(128):
        with monitor.labels(y[batch]):                               # the hooks see the batch's labels
            features = body(x[batch])
            logits = head(features)
        penultimate.update(features.detach(), y[batch])              # by hand: detached rows and labels
        loss = nn.functional.cross_entropy(logits, y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    if epoch in (1, 10, 30):
        with monitor.disabled(), torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).float().mean())
        print(f"epoch {epoch}: loss {loss.item():.3f}, training accuracy {accuracy:.3f}")
        print(monitor.report())
        print(f"by hand, layer 0.3: nc1 = {ncfast.metrics.nc1(penultimate):.4f}\n")
monitor.remove()
