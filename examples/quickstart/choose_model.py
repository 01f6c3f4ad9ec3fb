"""Way in 3 from Python: rank the zoo's models by running them on the target data (no dumps),
compare each score's ranking with the measured accuracies, draw the ranking.

    python examples/quickstart/model_zoo.py zoo/          # writes zoo/acc.json (and the dumps)
    python examples/quickstart/choose_model.py zoo/
"""

import json
import pathlib
import sys

import ncfast
from model_zoo import models, split

folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "zoo")
x_train, y_train, _, _ = split()
ranking = ncfast.rank_models(models(x_train, y_train), x_train, y_train,
                             scores=["nc1", "logme", "h_score", "gbc"])
print(ranking)
print("best by logme:", ranking.best("logme"))
accuracy = json.loads((folder / "acc.json").read_text())
for method in ("kendall", "weighted"):
    taus = ranking.correlation(accuracy, method)
    print(method, {score: round(tau, 3) for score, tau in taus.items()})
ranking.plot(str(folder / "ranking_python.png"), truth=accuracy)
