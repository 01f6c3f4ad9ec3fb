"""ClassStats: streaming sufficient statistics of labelled features (DESIGN.md section 3)."""

from __future__ import annotations

import functools
import numbers
import os
import threading
from typing import Any, Callable, Optional, Tuple, TypeVar, Union

import torch
from torch import Tensor

from . import _allreduce, _moments
from ._inputs import (IGNORE_INDEX, as_features, as_labels, as_rows, check_ignore_index, check_label_range,
                      drop_ignored)
from ._state import (INT64_MAX, StatsState, clone_state, copy_into, empty_state, extra_options, grow_classes,
                     merge_into, truncate_classes)
from ._statecheck import check_state_dict
from .backend import dispatch, ops
from .io import statsfile

PRECISIONS = ("auto", "exact", "fast")
VALIDATE_MODES = ("lazy", "sync")
_STATE_VERSION = 1
# Growth limit with num_classes=None: above every real label set (ImageNet-21k has 21,841 classes,
# MS-Celeb-1M about 100k identities) and far below what one stray label (1e7, 1e9, 2^63 - 1)
# would allocate. Streams with more classes pass num_classes, or a larger max_classes.
DEFAULT_MAX_CLASSES = 2**20

_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Runs `method` holding the statistics' lock: updates, merges and reads of one ClassStats
    from several threads serialise, and a read sees one whole state."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _normalise_device(device) -> torch.device:
    """"cuda" means the current CUDA device: pin the index so comparisons with a tensor's
    device ("cuda:0") hold."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _positive_int(value: Any, name: str, alternative: str = "") -> int:
    """An int >= 1 from any integer type (NumPy's included), never from a bool or a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name}: expected a positive int{alternative}, got {value!r}")
    return int(value)


class ClassStats:
    """Per-class counts and means and the pooled within-class scatter of a labelled stream.

    One pass, any number of rows, memory O(K D + D^2). Every derived matrix is float64.

    Parameters
    ----------
    num_classes : int or None
        K. Labels must lie in [0, K). ``None`` grows K as larger labels appear.
    dim : int
        D, the number of feature columns.
    device : str or torch.device, optional
        Where the statistics live (default CPU). Batches must be on the same device.
    precision : {"auto", "exact", "fast"}
        How the chunk Gram is accumulated. On the CPU every mode centres each row in float64
        and multiplies in float32 (float64 for float64 input), then folds into the float64
        master; see README "Precision" for the measured error. On CUDA, "fast" uses tensor
        cores (TF32 for float32), "exact" float32 FMA; "auto" is "fast" for 16-bit inputs and
        "exact" for float32.
    per_class_diag : bool
        Also track q_cj = sum_{i in c} (x_ij - mu_cj)^2 (K x D float64), needed by GBC and
        per-class Fisher scores. Off by default because K x D can be large.
    fourth_moments : bool
        Also track sum_i ||x_i - mu_G||^4 (a float64 scalar and a D-vector of third moments
        about a moving centre; docs/CONVENTIONS.md), needed by the Ledoit-Wolf shrinkage
        H-score. Costs a float64 pass over each batch in PyTorch; off by default.
    per_class_gram : bool
        Also track the per-class scatter W_c = sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T
        (K x D x D float64), needed by TransRate. Refused with a MemoryError naming the size
        when it cannot fit; costs a float64 Gram per batch in PyTorch; off by default.
        With either option on, each update checks its batch on the host before the kernels run
        (on CUDA one host synchronisation per update, as with ``validate="sync"``), and a
        compiled update is not supported.
    nan_policy : {"raise", "skip"}
        Rows holding NaN/Inf raise ValueError (default) or are dropped and counted in
        ``skipped_rows``.
    backend : {"auto", "native", "reference"}
        "native" runs the C++/CUDA kernels, "reference" the pure-PyTorch implementation in
        :mod:`ncfast.reference`; "auto" picks native where this build has kernels for the device.
    validate : {"lazy", "sync"}
        When bad input on a CUDA device is reported (the CPU and the reference always raise from
        :meth:`update`). The CUDA kernels check labels and finiteness on the device, without a
        host sync, so that updates can run inside a training step or a CUDA graph. A rejected
        batch changes nothing, and every later update is skipped too until the error has been
        raised: "lazy" (default) raises it at the next read of the statistics (any property,
        derived matrix, score, merge, ``state_dict``, or :meth:`check`), which waits for the
        queued updates; "sync" checks after every update (one host sync per batch, like the CPU).
        The error names the row, the label and which update call since the last check was
        rejected; afterwards the statistics hold exactly the rows before that call and accept
        updates again. Rows dropped under ``nan_policy="skip"`` reach ``skipped_rows`` at the
        same check.

    max_classes : int
        With ``num_classes=None``, the largest K that labels may grow the statistics to (default
        2**20 = 1,048,576): a label at or above it raises ValueError naming its row and value,
        instead of allocating K x D tables for one stray label. Ignored with a fixed
        ``num_classes``.

    Notes
    -----
    A ClassStats may be shared between threads: each update, merge and read holds the object's
    lock (the native kernels themselves run without the GIL), so concurrent updates give exactly
    the statistics of the batches applied one after the other in some order, and every read sees
    one whole state. A score reads the statistics several times: while other threads update,
    score ``stats.clone()``. Updates traced by ``torch.compile`` take no lock.

    Examples
    --------
    >>> stats = ClassStats(num_classes=10, dim=64)
    >>> stats.update(torch.randn(1000, 64), torch.randint(0, 10, (1000,)))  # doctest: +ELLIPSIS
    <ncfast.stats.ClassStats ...>
    >>> stats.sigma_w().shape
    torch.Size([64, 64])
    """

    def __init__(
        self,
        num_classes: Optional[int],
        dim: int,
        *,
        device: Union[str, torch.device, None] = None,
        precision: str = "auto",
        per_class_diag: bool = False,
        nan_policy: str = "raise",
        backend: str = "auto",
        validate: str = "lazy",
        fourth_moments: bool = False,
        per_class_gram: bool = False,
        max_classes: int = DEFAULT_MAX_CLASSES,
    ) -> None:
        self._lock = threading.RLock()
        if num_classes is not None:
            num_classes = _positive_int(num_classes, "num_classes", " or None")
        dim = _positive_int(dim, "dim")
        self._max_classes = _positive_int(max_classes, "max_classes")
        if not isinstance(per_class_diag, bool):
            raise TypeError(f"per_class_diag: expected True or False, got {per_class_diag!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        if nan_policy not in dispatch.NAN_POLICIES:
            raise ValueError(f"nan_policy: expected 'raise' or 'skip', got {nan_policy!r}")
        if validate not in VALIDATE_MODES:
            raise ValueError(f"validate: expected one of {VALIDATE_MODES}, got {validate!r}")
        self._validate = validate
        self._device = _normalise_device(device)
        self._fixed_classes = num_classes is not None
        self._precision = precision
        self._nan_policy = nan_policy
        self._backend_name = backend
        self._backend = dispatch.resolve_backend(backend, self._device)
        for name, flag in (("fourth_moments", fourth_moments), ("per_class_gram", per_class_gram)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected True or False, got {flag!r}")
        self._state = empty_state(num_classes or 0, dim, self._device, per_class_diag,
                                  fourth_moments=fourth_moments, per_class_gram=per_class_gram)
        self._compiled_skips: Optional[Tensor] = None  # rows skipped inside compiled updates

    # ------------------------------------------------------------------ update / merge

    def update(self, features: Any, labels: Any, *, ignore_index: Optional[int] = IGNORE_INDEX,
               channels_first: Optional[bool] = None) -> "ClassStats":
        """Folds a batch of rows into the statistics.

        Parameters
        ----------
        features : Tensor or ndarray, shape (B, D), (..., D) or (B, D, *spatial)
            float32, float64, float16 or bfloat16; any row stride (NumPy memmaps included).
            Tokens (B, T, D) with labels (B, T) and channels-first maps (B, D, H, W) with labels
            (B, H, W) are read as one row per token or pixel.
        labels : Tensor or ndarray, shape (B,), (...) or (B, *spatial)
            int32 or int64 class indices in [0, K), or `ignore_index`.
        ignore_index : int or None, default -100
            Rows with this label (PyTorch's and Hugging Face's padding label) are left out and
            counted in ``skipped_rows``. On a CUDA device finding them waits for the device once
            per batch: None turns it off (a label of -100 is then an error, as any negative one).
        channels_first : bool or None
            The layout of 3-D and wider features when their shape fits both (B, T, D) tokens
            and (B, D, *spatial) maps; None infers it from the shapes.

        Raises ValueError/TypeError naming the bad argument; on error nothing is changed. On a
        CUDA device, bad labels and NaN/Inf rows are found by the kernels and raised at the next
        read of the statistics (or here with ``validate="sync"``); see the class docstring.
        Without ``num_classes=None`` the update never synchronises with the host and can be
        captured in a CUDA graph after one warm-up call with the same batch shape.

        Under ``torch.compile`` (``fullgraph=True`` included) the update is one call of the
        ``ncfast::class_stats_update_`` operator; it then needs tensors on the statistics'
        device and a fixed ``num_classes``.
        """
        ignore_index = check_ignore_index(ignore_index)
        features, labels = as_rows(features, labels, self.dim, channels_first)
        if torch.compiler.is_compiling():
            return self._update_compiled(features, labels, ignore_index)
        with self._lock:
            return self._update(features, labels, ignore_index)

    def _update(self, features: Any, labels: Any, ignore_index: Optional[int] = None) -> "ClassStats":
        state = self._raw_state
        x = as_features(features, state.dim)
        y = as_labels(labels, x.shape[0])
        for name, tensor in (("features", x), ("labels", y)):
            if tensor.device != self._device:
                raise ValueError(
                    f"{name}: on {tensor.device} but the statistics are on {self._device} "
                    "(move the batch, or create ClassStats with that device)"
                )
        x, y, ignored = drop_ignored(x, y, ignore_index, state.num_classes if self._fixed_classes else None)
        if x.shape[0] == 0:
            state.skipped_rows += ignored
            return self
        classes_before = state.num_classes
        if not self._fixed_classes:
            self._grow_for(y)
            state = self._raw_state
        try:
            pending = self._prepare_extras(state, x, y)
            if self._backend == "native":
                dispatch.native_update_(state, x, y, self._nan_policy, precision=self._precision)
                if self._validate == "sync" or pending is not None:
                    dispatch.check_device_status_(state)
            else:
                dispatch.reference_update_(state, x, y, self._nan_policy)
            if pending is not None:
                _moments.commit_(state, pending)
            state.skipped_rows += ignored
        except Exception:
            if state.num_classes > classes_before:
                truncate_classes(state, classes_before)  # a rejected batch adds no classes
            raise
        return self

    def _prepare_extras(self, state: StatsState, x: Tensor, y: Tensor) -> Optional[_moments.PendingExtras]:
        """The optional statistics' share of the batch, computed before the kernels run and
        applied only once they have accepted it."""
        if state.fourth_moment is None and state.class_gram is None:
            return None
        if self._nan_policy == "skip":
            x, y = dispatch.checked_rows(state, x, y, self._nan_policy)  # the rows the kernels keep
        elif state.class_gram is not None:
            check_label_range(y, state.num_classes, error=dispatch.UpdateError)  # before indexing by label
        # under "raise" a NaN/Inf row makes the kernels reject the batch, and these increments with it
        return _moments.prepare(state, x, y, dispatch.row_moments if self._backend == "native" else None)

    def _update_compiled(self, features: Tensor, labels: Tensor, ignore_index: Optional[int] = None) -> "ClassStats":
        if self.fourth_moments or self.per_class_gram:
            raise ValueError("fourth_moments / per_class_gram: not supported by a compiled update; "
                             "update these statistics outside torch.compile")
        if not self._fixed_classes:
            raise ValueError("num_classes: a compiled update needs a fixed number of classes (not None)")
        if self._compiled_skips is None:
            self._compiled_skips = torch.zeros(1, dtype=torch.int64, device=self._device)
        state = self._raw_state
        diag = state.class_diag if state.class_diag is not None else state.means.new_empty((0, self.dim))
        ops.class_stats_update_(
            state.counts, state.means, state.scatter, state.class_scatter, diag, self._compiled_skips,
            features, labels, self._nan_policy, ignore_index,
        )
        return self

    @_locked
    def check(self) -> "ClassStats":
        """Raises now if a CUDA update enqueued since the last check was rejected (waits for the
        queued updates); see ``validate`` in the class docstring. A no-op on the CPU."""
        dispatch.check_device_status_(self._raw_state)
        return self

    @property
    def _state(self) -> StatsState:
        """The statistics, once any CUDA updates pending a status check have been checked."""
        state = self._raw_state
        if state.device_status is not None:
            dispatch.check_device_status_(state)
        return state

    @_state.setter
    def _state(self, state: StatsState) -> None:
        self._raw_state = state
        ops.register_owner(state)  # lets a compiled update find this state's device buffers

    def _grow_for(self, labels: Tensor) -> None:
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            row = int((labels == low).nonzero()[0, 0])
            raise ValueError(f"labels: value {low} at row {row} is negative")
        if high >= self._max_classes:
            row = int((labels >= self._max_classes).nonzero()[0, 0])
            raise ValueError(
                f"labels: value {int(labels[row])} at row {row} is beyond max_classes={self._max_classes:,} "
                "(pass num_classes=K, or a larger max_classes, if the labels really go that high)"
            )
        grow_classes(self._state, high + 1)

    def merge(self, other: "ClassStats") -> "ClassStats":
        """In-place merge with the statistics of another stream (Chan et al.): the result is
        what one stream over both inputs would give, up to rounding, in any merge order.

        The result tracks an optional statistic (``class_diag``, ``class_gram``, the fourth
        moments) only when both sides do: merging statistics without it into statistics with it
        turns it off here. Counts that would pass 2^63 - 1 rows and
        a scatter that would overflow float64 raise ValueError; nothing changes then."""
        if not isinstance(other, ClassStats):
            raise TypeError(f"other: expected ClassStats, got {type(other).__name__}")
        with other._lock:  # a copy, so that no thread ever holds both locks (no lock-order deadlock)
            other._fold_compiled_skips()
            theirs = clone_state(other._state)
        with self._lock:
            if theirs.dim != self.dim:
                raise ValueError(f"other: dim {theirs.dim} does not match {self.dim}")
            if other.device != self.device:
                raise ValueError(f"other: on {other.device} but these statistics are on {self.device}")
            if self._fixed_classes and theirs.num_classes > self.num_classes:
                raise ValueError(f"other: has {theirs.num_classes} classes, more than num_classes={self.num_classes}")
            if not self._fixed_classes and theirs.num_classes > self._max_classes:
                raise ValueError(f"other: has {theirs.num_classes:,} classes, more than max_classes={self._max_classes:,}")
            self._fold_compiled_skips()
            mine = self._state
            rows = int(mine.counts.sum()) + int(theirs.counts.sum())
            if rows > INT64_MAX:
                raise ValueError(f"other: the merged statistics would hold {rows:,} rows, more than a count "
                                 "holds (2^63 - 1)")
            merge_into(mine, theirs)
        return self

    @_locked
    def all_reduce(self, group: Optional[Any] = None) -> "ClassStats":
        """Replaces these statistics, on every rank of `group` (default: the whole world), by
        the statistics of all ranks' data together: the exact merge of DESIGN.md section 3 in
        two all-reduces of O(D^2 + K D) floats, not a sum of covariances. Works with gloo
        (CPU) and NCCL (GPU). Ranks may hold different row counts, miss classes, or (with
        ``num_classes=None``) have seen different largest labels; they must agree on ``dim``
        and ``per_class_diag``. Every rank ends with the same values."""
        self._fold_compiled_skips()
        _allreduce.all_reduce_state_(self._state, self._fixed_classes, group)
        return self

    def __iadd__(self, other: "ClassStats") -> "ClassStats":
        return self.merge(other)

    def __add__(self, other: "ClassStats") -> "ClassStats":
        return self.clone().merge(other)

    @_locked
    def clone(self) -> "ClassStats":
        """An independent copy (taken under the lock: one whole state)."""
        copy = ClassStats.__new__(ClassStats)
        copy.__dict__.update(self.__dict__)
        copy._lock = threading.RLock()
        self._fold_compiled_skips()
        copy._state = clone_state(self._state)
        if self._compiled_skips is not None:
            copy._compiled_skips = self._compiled_skips.clone()
        return copy

    @_locked
    def to(self, device: Union[str, torch.device]) -> "ClassStats":
        """A copy of these statistics on `device` (the kernels follow the device)."""
        device = _normalise_device(device)
        copy = self.clone()
        copy._device = device
        copy._backend = dispatch.resolve_backend(self._backend_name, device)
        copy._state = empty_state(self.num_classes, self.dim, device, self.per_class_diag,
                                  **extra_options(self._state))
        copy_into(copy._state, self._state)
        return copy

    def save(self, path: Union[str, os.PathLike], extra: Optional[dict] = None) -> None:
        """Writes the statistics to `path` (.pt: torch.save; otherwise safetensors), atomically;
        `extra` (JSON-serialisable) is kept as metadata and returned by :func:`load_stats`."""
        state = self.state_dict()
        tensors = {name: state.pop(name) for name in statsfile.TENSORS if name in state}
        meta = {**state, "options": self._options()}
        if extra:
            meta["extra"] = extra
        statsfile.write(path, tensors, meta)

    @staticmethod
    def load(path: Union[str, os.PathLike], *, allow_unverified: bool = False) -> "ClassStats":
        """Reads statistics written by :meth:`save` (onto the CPU; use .to(device) after); see
        :func:`load_stats`."""
        return load_stats(path, allow_unverified=allow_unverified)[0]

    @_locked
    def reset(self) -> "ClassStats":
        """Forgets every row seen (keeps K, D and the options)."""
        k = self.num_classes if self._fixed_classes else 0
        self._state = empty_state(k, self.dim, self._device, self.per_class_diag, **extra_options(self._raw_state))
        if self._compiled_skips is not None:
            self._compiled_skips.zero_()
        return self

    # ------------------------------------------------------------------ raw statistics

    @property
    def num_classes(self) -> int:
        return self._raw_state.num_classes

    @property
    def dim(self) -> int:
        return self._raw_state.dim

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def per_class_diag(self) -> bool:
        return self._raw_state.class_diag is not None

    @property
    def fourth_moments(self) -> bool:
        """Whether sum_i ||x_i - mu_G||^4 is tracked (``fourth_moments=True``)."""
        return self._raw_state.fourth_moment is not None

    @property
    def per_class_gram(self) -> bool:
        """Whether the per-class scatter matrices are tracked (``per_class_gram=True``)."""
        return self._raw_state.class_gram is not None

    @property
    def nan_policy(self) -> str:
        """"raise" or "skip": what an update does with rows holding NaN/Inf."""
        return self._nan_policy

    @property
    @_locked
    def num_samples(self) -> int:
        """N, the number of rows folded in (skipped rows excluded)."""
        return int(self._state.counts.sum())

    @property
    @_locked
    def skipped_rows(self) -> int:
        """Rows dropped for holding NaN/Inf under nan_policy='skip'."""
        self._fold_compiled_skips()
        return self._state.skipped_rows

    def _fold_compiled_skips(self) -> None:
        """Moves the device-side count of compiled updates into the plain counter."""
        skips = getattr(self, "_compiled_skips", None)
        if skips is not None and not torch.compiler.is_compiling():
            self._state.skipped_rows += int(skips.item())
            skips.zero_()

    @property
    @_locked
    def counts(self) -> Tensor:
        """(K,) int64, rows per class."""
        return self._state.counts.clone()

    @property
    @_locked
    def means(self) -> Tensor:
        """(K, D) float64 class means; rows of empty classes are zero."""
        return self._state.means.clone()

    @property
    @_locked
    def within_scatter(self) -> Tensor:
        """(D, D) float64 W = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T."""
        return self._state.scatter.clone()

    @property
    @_locked
    def class_scatter(self) -> Tensor:
        """(K,) float64 tr_c = sum_{i in c} ||x_i - mu_c||^2."""
        return self._state.class_scatter.clone()

    @property
    @_locked
    def class_diag(self) -> Tensor:
        """(K, D) float64 q_cj = sum_{i in c} (x_ij - mu_cj)^2 (needs per_class_diag=True)."""
        if self._state.class_diag is None:
            raise ValueError("class_diag: not tracked; create ClassStats with per_class_diag=True")
        return self._state.class_diag.clone()

    @property
    def class_gram(self) -> Tensor:
        """(K, D, D) float64 W_c = sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T (needs per_class_gram=True)."""
        if self._state.class_gram is None:
            raise ValueError("class_gram: not tracked; create ClassStats with per_class_gram=True")
        return self._state.class_gram.clone()

    def fourth_moment(self) -> float:
        """sum_i ||x_i - mu_G||^4 over the rows seen (needs fourth_moments=True): with the
        covariance, what Ledoit-Wolf's shrinkage coefficient needs."""
        if self._state.fourth_moment is None:
            raise ValueError("fourth_moment: not tracked; create ClassStats with fourth_moments=True")
        self._require_samples("fourth_moment")
        return float(_moments.central_moments(self._state)[0])

    # ------------------------------------------------------------------ derived matrices

    def _require_samples(self, what: str) -> int:
        n = self.num_samples
        if n == 0:
            raise ValueError(f"{what}: undefined before any row was seen (call update first)")
        return n

    def _present(self) -> Tensor:
        return self._state.counts > 0

    @property
    @_locked
    def global_mean(self) -> Tensor:
        """(D,) float64 mu_G = sum_c n_c mu_c / N."""
        n = self._require_samples("global_mean")
        weights = self._state.counts.to(torch.float64)
        return weights @ self._state.means / n

    @_locked
    def centred_means(self) -> Tensor:
        """(K', D) float64 mu_c - mu_G over the K' classes that have rows."""
        return self._state.means[self._present()] - self.global_mean

    @_locked
    def sigma_w(self) -> Tensor:
        """(D, D) float64 within-class covariance Sigma_W = W / N."""
        return self._state.scatter / self._require_samples("sigma_w")

    @_locked
    def between_scatter(self) -> Tensor:
        """(D, D) float64 S_B = sum_c n_c (mu_c - mu_G)(mu_c - mu_G)^T."""
        self._require_samples("between_scatter")
        m = self.centred_means()
        n = self._state.counts[self._present()].to(torch.float64)
        s_b = (m * n[:, None]).T @ m
        return 0.5 * (s_b + s_b.T)

    @_locked
    def sigma_b(self, weighted: bool = False) -> Tensor:
        """(D, D) float64 between-class covariance.

        ``weighted=False``: Papyan's class-balanced (1/K') sum_c (mu_c - mu_G)(mu_c - mu_G)^T
        over the K' classes that have rows (the NC1 convention).
        ``weighted=True``: S_B / N, so that sigma_t() == sigma_w() + sigma_b(weighted=True).
        """
        if weighted:
            return self.between_scatter() / self.num_samples
        self._require_samples("sigma_b")
        m = self.centred_means()
        return (m.T @ m) / m.shape[0]

    @_locked
    def sigma_t(self) -> Tensor:
        """(D, D) float64 total covariance (W + S_B) / N (population normalisation)."""
        return (self._state.scatter + self.between_scatter()) / self.num_samples

    @_locked
    def gram(self) -> Tensor:
        """(D, D) float64 raw Gram F^T F = W + sum_c n_c mu_c mu_c^T (LogME's input)."""
        self._require_samples("gram")
        n = self._state.counts.to(torch.float64)
        mu = self._state.means
        g = self._state.scatter + (mu * n[:, None]).T @ mu
        return 0.5 * (g + g.T)

    # ------------------------------------------------------------------ persistence

    @_locked
    def state_dict(self) -> dict:
        """Tensors and options, enough to rebuild these statistics with load_state_dict."""
        self._fold_compiled_skips()
        s = self._state
        out = {
            "version": _STATE_VERSION,
            "num_classes": self.num_classes,
            "dim": self.dim,
            "fixed_classes": self._fixed_classes,
            "counts": s.counts.clone(),
            "means": s.means.clone(),
            "scatter": s.scatter.clone(),
            "class_scatter": s.class_scatter.clone(),
            "skipped_rows": s.skipped_rows,
        }
        if s.class_diag is not None:
            out["class_diag"] = s.class_diag.clone()
        if s.class_gram is not None:
            out["class_gram"] = s.class_gram.clone()
        if s.fourth_moment is not None:
            out["moment_centre"] = s.moment_centre.clone()
            out["fourth_moment"] = s.fourth_moment.reshape(1).clone()
            out["third_moment"] = s.third_moment.clone()
        return out

    @_locked
    def load_state_dict(self, state_dict: dict) -> "ClassStats":
        """Replaces these statistics with saved ones (moved to this object's device).

        Every size is checked against the tensors given before anything is allocated; negative or
        overflowing counts, non-finite values and a ``class_diag`` that this object does not
        track (or the lack of one that it does) raise ValueError, and nothing changes."""
        k, dim, has_diag = check_state_dict(state_dict, _STATE_VERSION)
        if dim != self.dim:
            raise ValueError(f"state_dict: dim {dim} does not match {self.dim}")
        if has_diag != self.per_class_diag:
            raise ValueError("state_dict: has no class_diag but per_class_diag=True here" if self.per_class_diag
                             else "state_dict: holds class_diag but per_class_diag=False here (create ClassStats "
                                  "with per_class_diag=True to keep it)")
        extras = extra_options(self._raw_state)
        needed = (["class_gram"] if extras["per_class_gram"] else []) + (
            ["moment_centre", "fourth_moment", "third_moment"] if extras["fourth_moments"] else [])
        absent = [name for name in needed if state_dict.get(name) is None]
        if absent:
            raise ValueError(f"state_dict: has no {', '.join(absent)} but these statistics track them")
        fresh = empty_state(k, dim, self._device, self.per_class_diag, **extras)
        optional = {name: state_dict[name].to(torch.float64) for name in ("class_gram", "moment_centre", "third_moment")
                    if name in needed}
        if "fourth_moment" in needed:
            optional["fourth_moment"] = state_dict["fourth_moment"].to(torch.float64).reshape(())
        loaded = StatsState(
            counts=state_dict["counts"].to(torch.int64),
            means=state_dict["means"].to(torch.float64),
            scatter=state_dict["scatter"].to(torch.float64),
            class_scatter=state_dict["class_scatter"].to(torch.float64),
            class_diag=state_dict["class_diag"].to(torch.float64) if self.per_class_diag else None,
            skipped_rows=int(state_dict.get("skipped_rows", 0)),
            **optional,
        )
        copy_into(fresh, loaded)
        self._state = fresh
        self._fixed_classes = bool(state_dict.get("fixed_classes", True))
        if self._compiled_skips is not None:
            self._compiled_skips.zero_()
        return self

    def _options(self) -> dict:
        """The constructor's keyword arguments that rebuild these statistics."""
        return {
            "device": str(self._device),
            "precision": self._precision,
            "per_class_diag": self.per_class_diag,
            "nan_policy": self._nan_policy,
            "backend": self._backend_name,
            "validate": self._validate,
            "max_classes": self._max_classes,
            **extra_options(self._raw_state),
        }

    def __getstate__(self) -> dict:
        return {"options": self._options(), "state": self.state_dict()}

    def __setstate__(self, data: dict) -> None:
        state = data["state"]
        self.__init__(state["num_classes"], state["dim"], **data["options"])
        self.load_state_dict(state)

    def __repr__(self) -> str:
        state = self._raw_state  # no status check: repr must not raise
        return (
            f"ClassStats(num_classes={state.num_classes}, dim={state.dim}, "
            f"num_samples={int(state.counts.sum())}, "
            f"device={self._device}, backend={self._backend!r})"
        )


def save_stats(stats: ClassStats, path: Union[str, os.PathLike], extra: Optional[dict] = None) -> None:
    """Writes `stats` to `path` atomically (see :meth:`ClassStats.save`)."""
    if not isinstance(stats, ClassStats):
        raise TypeError(f"stats: expected ClassStats, got {type(stats).__name__}")
    stats.save(path, extra)


def load_stats(path: Union[str, os.PathLike], *, allow_unverified: bool = False) -> Tuple[ClassStats, dict]:
    """(ClassStats on the CPU, the `extra` metadata saved with it) from a file written by
    :func:`save_stats`.

    The file's SHA-256 digest (of its tensors and metadata) is checked first, then every size
    against the tensors it holds, before anything is allocated; an edited, corrupt or truncated
    file, or one whose metadata disagrees with its tensors, raises ValueError naming the file.
    Files written before ncfast kept a digest are refused unless ``allow_unverified=True``
    (their contents are still checked; save them again to add the digest)."""
    path = os.fspath(path)
    tensors, meta = statsfile.read(path, allow_unverified=allow_unverified)
    try:
        options = _saved_options(meta.pop("options", None))
        extra = meta.pop("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"extra: expected a dict, got {type(extra).__name__}")
        state = {**meta, **tensors}
        k, dim, has_diag = check_state_dict(state, _STATE_VERSION)  # sizes vs tensors, before allocating
        if options.get("per_class_diag", False) != has_diag:
            raise ValueError(f"options: per_class_diag={options.get('per_class_diag', False)} but the file "
                             f"{'holds' if has_diag else 'holds no'} class_diag")
        options["device"] = "cpu"
        stats = ClassStats(k if state.get("fixed_classes", True) and k else None, dim, **options)
        stats.load_state_dict(state)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None
    return stats, extra


_SAVED_OPTIONS = ("device", "precision", "per_class_diag", "nan_policy", "backend", "validate", "max_classes",
                  "fourth_moments", "per_class_gram")


def _saved_options(options: Any) -> dict:
    """The constructor options of a statistics file: a dict of known names only."""
    if not isinstance(options, dict):
        raise ValueError(f"options: expected a dict of ClassStats options, got {type(options).__name__}")
    unknown = sorted(set(options) - set(_SAVED_OPTIONS))
    if unknown:
        raise ValueError(f"options: unknown {', '.join(map(repr, unknown))} (known: {', '.join(_SAVED_OPTIONS)})")
    return dict(options)
