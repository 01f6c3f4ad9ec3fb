"""Shared fixtures. The float64 references live in reference_stats.py and reference_scores.py."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(params=["digits", "wine", "breast_cancer"])
def real_dataset(request):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{request.param}")
    data = loader()
    return request.param, data.data.astype(np.float64), data.target.astype(np.int64)
