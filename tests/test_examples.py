"""The demonstrations under examples/ run end to end (short settings) and print their results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CASES = {
    "rank_models.py": (["--quick"], ["rank correlation", "leep", "nce", "logme"]),
    "nc_finetune.py": (["--seeds", "1", "--epochs", "2"], ["block"]),
    "vcreg_pretraining.py": (["--seeds", "1", "--epochs", "1"], ["nc1_source", "VCReg("]),
    "fewshot_soft_mask.py": (["--episodes", "5", "--shots", "5", "--features", "pixels"], ["5-shot"]),
    "monitor_training.py": (["--epochs", "2", "--plot", "nc.png"], ["wrote nc.png", "fc2 nc1"]),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    args, expected = CASES[script]
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, (text, done.stdout[-3000:])
