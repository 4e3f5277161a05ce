"""How far to trust a difference-in-means influence estimate, and whether to train more models.

Four diagnostics, all computed from the completed models of a sweep (a :class:`SweepSource`:
a :class:`~transfer_influence.sweep.store.SweepStore` streamed in blocks, or in-memory arrays;
both give the same numbers for the same models):

- **Split-half agreement** (:func:`split_half_agreement`): the models are split at random
  (``seed``) into two disjoint halves, influence is estimated on each, and the Spearman rank
  correlation between the two estimates is reported for the overall scores and, averaged over
  target classes, for the per-class scores. :func:`spearman_brown` turns a split-half
  correlation ``r`` into the reliability of the full sample, ``2 r / (1 + r)``.
- **Bootstrap standard errors**: each replicate reweights every model by an independent
  Poisson(1) count (a streaming-friendly bootstrap: a model's weight depends only on
  ``(seed, replicate, model index)``), and the weighted difference in means is accumulated block
  by block as matrix products. :func:`bootstrap_summary` gives the standard error of the overall
  and per-class scores and a **convergence curve** (mean standard error against the number of
  models, on prefixes of the model order, with its log-log slope: about ``-1/2``, the
  ``1/sqrt(m)`` law). :func:`bootstrap_se` gives the standard error of every influence value
  ``[units, targets]``, one replicate at a time.
- **Knockoff false discovery rate** (:func:`knockoff_fdr`, :func:`estimate_fdr`): knockoff
  units are given masks drawn independently from the same distribution as the real masks, so
  their "influence" on the same outputs is pure noise; how many of them score as high as the
  reported top-``k`` real units estimates how many of those could be noise.
- :func:`diagnose` / :func:`diagnose_store` run all of them in one pass and return a
  :class:`Diagnostics` whose :meth:`Diagnostics.verdict` says in words whether more models are
  needed.
- **Divergence association** (:func:`divergence_association`): diverged models are excluded
  from every estimate, which biases the influences when divergence depends on the subset. Each
  unit is tested for whether keeping it makes divergence more likely (one-sided Fisher exact
  test on the 2x2 table kept/dropped x diverged/completed, Benjamini-Hochberg adjusted), and
  the units significant at ``DIVERGENCE_FDR`` are named: such a unit is itself a finding.

Aggregates. The summaries users read are a unit's *overall* score (influence averaged over all
target examples, ``[units]``) and its *per-class* scores (averaged over the target examples of
each class, ``[units, classes]``). Difference-in-means is linear in the outputs, so the influence
averaged over some targets equals the influence on the output averaged over those targets. Each
block of outputs ``[models, targets]`` is therefore reduced once to ``[models, classes + 1]``
(class means, then the overall mean), and every diagnostic except :func:`bootstrap_se` runs on
that small matrix.

Memory and time of :func:`diagnose` (``M`` models, ``U`` units, ``T`` targets, ``C`` target
classes, ``B`` replicates, ``K`` knockoff units, ``n`` models per block): one pass over the
models. Held at once: a block's outputs (``2 n T`` float64), knockoff masks ``n K`` bool, the
bootstrap sums ``B U (C + 2)`` float64 (peak about four times that while a convergence point is
evaluated) and a few ``U (C + 2)`` sums -- independent of ``M``: a peak of about 320 MiB at
``U = 1,000, C = 100, B = 100`` (measured). The bootstrap dominates the time, about
``2 B M U (C + 2)`` floating-point operations (1 s for 300 models at those sizes on one core).
Only the split-half assignment grows with ``M`` (a permutation and a flag per model, ``9 M``
bytes); no diagnostic holds the models' masks or outputs all at once. ``per_target_se=True``
adds :func:`bootstrap_se`: ``B`` more passes over the models and about ``6 U T`` float64.

Modules, along the seams: ``source`` (store access: :class:`SweepSource`), ``statistics``
(split halves, bootstrap, knockoffs, divergence association), ``verdict`` (:func:`diagnose`,
:class:`Diagnostics` and its words) and ``summary`` (the saved :class:`DiagnosticsSummary`).
"""

from .source import SIDES, Side, SweepSource
from .statistics import (
    DEFAULT_FRACTIONS,
    DEFAULT_REPLICATES,
    DIVERGENCE_FDR,
    KNOCKOFF_SEED_OFFSET,
    BootstrapSummary,
    ConvergenceCurve,
    DivergenceAssociation,
    KnockoffFDR,
    SplitHalf,
    bootstrap_se,
    bootstrap_summary,
    divergence_association,
    divergence_association_store,
    estimate_fdr,
    knockoff_fdr,
    null_threshold,
    spearman_brown,
    split_half_agreement,
)
from .summary import DiagnosticsSummary
from .verdict import (
    CAUTION_FDR,
    MAX_FDR,
    MIN_LDS,
    MIN_SIGNAL_TO_NOISE,
    MIN_SPLIT_HALF,
    Diagnostics,
    diagnose,
    diagnose_store,
)

__all__ = [
    "CAUTION_FDR",
    "DEFAULT_FRACTIONS",
    "DEFAULT_REPLICATES",
    "DIVERGENCE_FDR",
    "KNOCKOFF_SEED_OFFSET",
    "MAX_FDR",
    "MIN_LDS",
    "MIN_SIGNAL_TO_NOISE",
    "MIN_SPLIT_HALF",
    "SIDES",
    "BootstrapSummary",
    "ConvergenceCurve",
    "Diagnostics",
    "DiagnosticsSummary",
    "DivergenceAssociation",
    "KnockoffFDR",
    "Side",
    "SplitHalf",
    "SweepSource",
    "bootstrap_se",
    "bootstrap_summary",
    "diagnose",
    "diagnose_store",
    "divergence_association",
    "divergence_association_store",
    "estimate_fdr",
    "knockoff_fdr",
    "null_threshold",
    "spearman_brown",
    "split_half_agreement",
]
