"""Way in 2 (set-up): writes the built-in example of `ncfast score` to disk as a dump, the way a
feature-extraction job would: a folder of .npy shards of features, the labels, the class
names, and the classifier that goes with them.

    python examples/quickstart/write_dump.py dump/       # 4 shards of 50,000 x 256 float32 (205 MB)
"""

import pathlib
import sys

import numpy as np

from ncfast.cli.score import example_data

GROUPS = [  # the example's 20 classes fall in 5 groups of 4 similar ones: label c is in group c % 5
    ["cat", "dog", "horse", "cow"],
    ["car", "bus", "truck", "tram"],
    ["oak", "pine", "birch", "maple"],
    ["trout", "shark", "eel", "cod"],
    ["rose", "tulip", "daisy", "lily"],
]

folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "dump")
(folder / "feats").mkdir(parents=True, exist_ok=True)
features, labels, centres = example_data()
x = features.read(0, features.rows).numpy()
for i, start in enumerate(range(0, len(x), 50_000)):
    np.save(folder / "feats" / f"part-{i:03d}.npy", x[start : start + 50_000])
np.save(folder / "labels.npy", labels.read(0, labels.rows).numpy())
np.save(folder / "classifier.npy", centres.numpy())
names = [GROUPS[c % 5][c // 5] for c in range(20)]
(folder / "classes.txt").write_text("\n".join(names) + "\n")
print(f"wrote {folder}/feats/ ({x.shape[0]:,} x {x.shape[1]} float32 in 4 shards), {folder}/labels.npy, "
      f"{folder}/classifier.npy, {folder}/classes.txt")
