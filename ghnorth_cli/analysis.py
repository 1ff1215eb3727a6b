"""Channel-correlation analysis of conv/linear weights (Section 2 and Figure 2 of the GHN-orth paper).

For a layer with weight ``W`` of shape ``(K, ...)`` the *channels* are the K rows of the 2-D view
``K x CHW``; their Pearson correlation matrix is ``K x K``. GHN-2 tiles a small predicted block to fill
large layers, so its channels are often exact copies of each other (|r| = 1); GHN-orth breaks that.

Everything here works on plain tensors, so it applies to any checkpoint. The correlation is computed with
a matrix product over standardized rows, in row blocks, and summarized on the fly (moments, counts and a
fixed-bin histogram) instead of keeping all K^2 values, so layers with thousands of channels stay fast.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ghnorth_cli.models import classifier_tensor_names, weight_layer_names
from ghnorth_cli.threads import intra_op_threads

logger = logging.getLogger(__name__)

HIST_BINS = 200
"""Number of equal-width histogram bins over [-1, 1] kept per layer (bin width 0.01)."""

HIGH_CORRELATION = 0.5
"""Threshold of the ``frac_high`` statistic: the fraction of channel pairs with |r| > 0.5."""

_ROW_BLOCK = 1024


def layer_names(tensors: Mapping[str, Tensor], order: Sequence[str]) -> list[str]:
    """The paper's "layers": tensors named ``weight`` or ``*.weight`` with 2 or more dimensions, in ``order``.

    ``order`` is module order (a model's ``state_dict`` order); the last returned name is the classifier.
    """
    missing = [name for name in order if name not in tensors]
    if missing:
        raise KeyError(f"order names a tensor that is not there: {missing[0]!r}")
    return weight_layer_names([(name, tuple(tensors[name].shape)) for name in order])


def compute_precision(tensor: Tensor) -> Tensor:
    """``tensor`` in a dtype the CPU kernels (and numpy) support: float16, bfloat16 and float8 become float32.

    Every value of these types is exactly representable in float32, so nothing (not even a duplicate
    channel) changes; float32 and float64 are returned as they are.
    """
    if tensor.dtype in (torch.float32, torch.float64) or not tensor.is_floating_point():
        return tensor
    return tensor.to(torch.float32)


def weight_matrix(weight: Tensor) -> Tensor:
    """The 2-D view ``K x CHW`` of a conv/linear weight: one row per output channel."""
    if weight.dim() < 2:
        raise ValueError(f"expected a weight with 2 or more dimensions, got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)


def _standardized_rows(mat: Tensor, *, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rows centered and scaled to unit norm (so that ``Z @ Z.T`` is the correlation), and a constant-row mask.

    Rows whose values are all equal have no defined correlation; they come back as zeros, flagged in the mask.
    """
    mat = compute_precision(mat.detach())
    constant = mat.amax(dim=1) == mat.amin(dim=1)
    x = mat.to(dtype, copy=True)
    x -= x.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    norm[constant] = 1.0
    x /= norm
    x[constant] = 0.0
    return x, constant


def row_correlation(mat: Tensor, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Pearson correlation between the rows of a 2-D tensor (like ``torch.corrcoef``), computed by matmul.

    Entries involving a constant row are NaN, as with ``torch.corrcoef``; values are clamped to [-1, 1].
    """
    if mat.dim() != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(mat.shape)}")
    z, constant = _standardized_rows(mat, dtype=dtype)
    corr = (z @ z.t()).clamp_(-1.0, 1.0)
    corr[constant, :] = math.nan
    corr[:, constant] = math.nan
    return corr


def row_correlation_std(mat: Tensor) -> float:
    """Unbiased std of all n^2 values (diagonal included) of the rows' correlation, without forming it.

    With standardized rows ``Z`` (n x d): sum C = ||Z^T 1||^2 and sum C^2 = ||Z^T Z||_F^2, a product over the
    smaller side, so a 4096 x 1024 view costs a 1024 x 1024 Gram matrix instead of a 4096 x 4096 one.
    Constant rows (undefined correlation) are left out; with fewer than two values the result is 0.
    """
    z, constant = _standardized_rows(mat, dtype=torch.float32)  # ~1e-7 relative error, twice as fast as float64
    z = z[~constant]
    count = z.shape[0] ** 2
    if count < 2:
        return 0.0
    total = torch.linalg.vector_norm(z.sum(dim=0, dtype=torch.float64)).item() ** 2
    gram = z.t() @ z if z.shape[1] <= z.shape[0] else z @ z.t()
    total_sq = torch.linalg.vector_norm(gram, dtype=torch.float64).item() ** 2
    variance = (total_sq - total * total / count) / (count - 1)
    return math.sqrt(max(variance, 0.0))


def channel_correlation(weight: Tensor, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """The ``K x K`` Pearson correlation between the K output channels of a conv/linear weight."""
    return row_correlation(weight_matrix(weight), dtype=dtype)


@dataclass
class _CorrelationSummary:
    """Running sums over the correlation values of the channel pairs (each unordered pair once)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    total_abs: float = 0.0
    high: int = 0
    histogram: Tensor = field(default_factory=lambda: torch.zeros(HIST_BINS, dtype=torch.float64))

    def add(self, values: Tensor) -> None:
        """Add a batch of correlation values (any shape, within [-1, 1])."""
        # float32 reductions per block (pairwise summation, ~1e-6 relative), accumulated in Python floats
        values = values.float()
        magnitudes = values.abs()
        self.count += values.numel()
        self.total += values.sum().item()
        self.total_sq += torch.linalg.vector_norm(values).item() ** 2
        self.total_abs += magnitudes.sum().item()
        self.high += int(torch.count_nonzero(magnitudes > HIGH_CORRELATION).item())
        self.histogram += torch.histc(values, bins=HIST_BINS, min=-1.0, max=1.0).to(torch.float64)

    def mean_abs(self) -> float:
        return self.total_abs / self.count if self.count else math.nan

    def std(self) -> float:
        if self.count < 2:
            return math.nan
        mean = self.total / self.count
        return math.sqrt(max(self.total_sq / self.count - mean * mean, 0.0))

    def frac_high(self) -> float:
        return self.high / self.count if self.count else math.nan


def _summarize_correlation(mat: Tensor, *, dtype: torch.dtype) -> tuple[_CorrelationSummary, int]:
    """Summary over the pairs of distinct non-constant rows, and the number of constant rows.

    The correlation is symmetric, so only the blocks on and right of the diagonal are computed, and of
    the diagonal blocks only their strict upper triangle is kept.
    """
    z, constant = _standardized_rows(mat, dtype=dtype)
    z = z[~constant]
    summary = _CorrelationSummary()
    for start in range(0, z.shape[0], _ROW_BLOCK):
        rows = z[start : start + _ROW_BLOCK]
        block = (rows @ z[start:].t()).clamp_(-1.0, 1.0)
        size = rows.shape[0]
        upper = torch.triu_indices(size, size, offset=1)
        summary.add(block[upper[0], upper[1]])
        summary.add(block[:, size:])
    return summary, int(constant.sum().item())


def duplicate_rows(mat: Tensor) -> int:
    """How many rows exactly repeat an earlier row (rows minus distinct rows), by hashing each row's bytes."""
    rows = (compute_precision(mat.detach().to("cpu")).contiguous() + 0.0).numpy()  # + 0.0 turns -0.0 into 0.0
    return rows.shape[0] - len({row.tobytes() for row in rows})


def singular_value_stats(mat: Tensor) -> tuple[float, float]:
    """Largest singular value and effective rank (exp of the entropy of the normalized singular values).

    Uses the eigenvalues of the smaller Gram matrix (float32, one thread), much faster than an SVD of a tall matrix.
    """
    m = mat.detach().float()
    if m.shape[0] > m.shape[1]:
        m = m.t()
    gram = m @ m.t()
    # One thread: the eigensolver's many short parallel regions ran 10-100x slower on two shared
    # cores (0.06 s against 0.4-6.7 s for a 512 x 512 Gram matrix).
    with intra_op_threads(1):
        sv = torch.linalg.eigvalsh(gram).to(torch.float64).clamp_min(0.0).sqrt()
    total = sv.sum().item()
    if total == 0.0:
        return 0.0, 0.0
    p = sv / total
    p = p[p > 0]
    entropy = -(p * p.log()).sum().item()
    return sv.max().item(), math.exp(entropy)


@dataclass(frozen=True)
class LayerStats:
    """Channel-correlation statistics of one conv/linear layer, over the K(K-1)/2 pairs of distinct channels
    (the off-diagonal values of its K x K correlation; mean |r|, population std of r, fraction |r| > 0.5)."""

    index: int
    """1-based position among the checkpoint's 2+-D weights, in module order."""
    name: str
    shape: tuple[int, ...]
    channels: int
    mean_abs_corr: float
    std_corr: float
    frac_high: float
    """Fraction of channel pairs with |r| > 0.5."""
    duplicate_channels: int
    """Channels that exactly repeat another channel (K minus the number of distinct channels)."""
    constant_channels: int
    """Channels whose values are all equal (no defined correlation; left out of the correlation stats)."""
    max_singular_value: float
    effective_rank: float
    histogram: tuple[int, ...]
    """Counts of the K(K-1)/2 channel-pair correlations in ``HIST_BINS`` equal bins over [-1, 1]."""
    classifier: bool = False
    """Whether the layer is a classifier head (``models.classifier_tensor_names``)."""

    def to_dict(self, *, with_histogram: bool = False) -> dict:
        """A JSON-ready dict (NaN becomes None); the histogram only when asked."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        if with_histogram:
            out["histogram"] = list(self.histogram)
        else:
            del out["histogram"]
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def histogram_edges() -> Tensor:
    """The ``HIST_BINS + 1`` bin edges over [-1, 1] that ``LayerStats.histogram`` uses."""
    return torch.linspace(-1.0, 1.0, HIST_BINS + 1, dtype=torch.float64)


def layer_stats(name: str, weight: Tensor, *, index: int, dtype: torch.dtype = torch.float32) -> LayerStats:
    """Statistics of one weight; ``dtype`` is the precision of the correlation matmul."""
    mat = compute_precision(weight_matrix(weight).detach().to("cpu"))
    summary, constant = _summarize_correlation(mat, dtype=dtype)
    sigma_max, eff_rank = singular_value_stats(mat)
    return LayerStats(
        index=index,
        name=name,
        shape=tuple(weight.shape),
        channels=mat.shape[0],
        mean_abs_corr=summary.mean_abs(),
        std_corr=summary.std(),
        frac_high=summary.frac_high(),
        duplicate_channels=duplicate_rows(mat),
        constant_channels=constant,
        max_singular_value=sigma_max,
        effective_rank=eff_rank,
        histogram=tuple(int(c) for c in summary.histogram.round().tolist()),
    )


def analyze_tensors(
    tensors: Mapping[str, Tensor],
    order: Sequence[str],
    *,
    layers: Iterable[str] | None = None,
    dtype: torch.dtype = torch.float32,
    classifier: Collection[str] | None = None,
) -> list[LayerStats]:
    """Statistics of every conv/linear layer (see ``layer_names``), or only of the named ``layers``.

    ``classifier`` names the classifier's tensors (every head) to flag; None: the last layer.
    """
    names = layer_names(tensors, order)
    heads = set(classifier_tensor_names({n: tuple(tensors[n].shape) for n in order})
                if classifier is None else classifier)
    wanted = None if layers is None else set(layers)
    stats = []
    for index, name in enumerate(names, start=1):
        if wanted is not None and name not in wanted:
            continue
        logger.debug("analyzing %s %s", name, tuple(tensors[name].shape))
        stats.append(dataclasses.replace(layer_stats(name, tensors[name], index=index, dtype=dtype),
                                         classifier=name in heads))
    return stats
