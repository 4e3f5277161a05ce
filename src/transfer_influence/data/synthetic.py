"""A synthetic transfer problem with planted helpful and harmful source classes.

Influence estimators need a test where the answer is known. :func:`planted_transfer_problem`
builds tiny grey images (8x8 by default) with four target classes, one pair of which, ``t`` and
``u``, is hard to tell apart, and a source made of one **helpful**, one **harmful** and several
**filler** classes.

The images
----------
Every image is a class prototype plus Gaussian pixel noise (``noise``). Prototypes are random
around grey 0.5 (``spread``); ``t`` and ``u`` share one base pattern and differ by ``+-contrast``
times a balanced sign pattern ``d``. On top of that, **every target image carries a faint cue**:
``+-cue`` times a fixed balanced sign pattern ``w`` (a "watermark"), chosen orthogonal to ``d``
and to a constant image, so it carries no information about ``t`` versus ``u`` by itself. Its
polarity is random for the other target classes, but it is a *spurious* feature for the pair:

* in the few-shot **target training** split, every ``t`` image has polarity ``+`` and every ``u``
  image ``-``, so the cue separates ``t`` from ``u`` perfectly there;
* in the **target test** split the correlation is reversed (``t`` has ``-``, ``u`` has ``+``),
  like a shortcut that breaks under distribution shift.

A transferred model that relies on the cue therefore gets ``t``'s test images wrong.

The source classes
------------------
* **helpful**: drawn from exactly ``t``'s distribution (no cue). Pretraining with it teaches the
  backbone a detector of ``t``'s pattern, so the linear head separates ``t`` from ``u`` with real
  features: its presence raises the probability of the correct class on ``t``.
* **harmful**: filler images (each example a random filler prototype plus noise) stamped with the
  cue at a strong amplitude (``harmful_cue``) and random polarity. The only thing that tells this
  class from the fillers is the cue, so pretraining with it makes the backbone an explicit (and
  polarity-specific) cue detector. Without it the backbone sees the faint cue only through its
  random initial weights. A logistic-regression head fitted on 5 shots per class then leans on the
  cue feature -- perfectly predictive in the target training split -- and the reversed cue at test
  time pushes ``t``'s test images towards ``u``: its presence lowers accuracy on ``t`` (and on
  ``u``), i.e. the harm is negative transfer through a shortcut feature.
* **fillers**: unrelated random prototypes without the cue.

Source classes appear in a seeded random order, so an estimator cannot rely on their position.

What did not work (kept for the record; ``mlp`` width 16, 40 epochs, fixed-feature transfer, 64
models, influence on ``t``): a harmful class made of ``t`` and ``u`` images under one label (meant
to teach invariance to the ``t``-``u`` difference) scored between -0.08 and +0.08 and ranked last
in 0 of 8 seeds -- such a class also teaches ``t``-versus-rest features. With a cue instead
(scratch versions of this generator): random polarity in *both* target splits (pure nuisance
variance) gave mean -0.06 and ranked last in 1 of 6 seeds; label-correlated in training but random
at test gave -0.21 and 7 of 8 seeds. A cue pattern drawn independently of ``d`` sometimes overlapped
it (correlation 0.25 in one seed), which cancelled the harm whenever the helpful class was present;
hence ``w`` is built orthogonal to ``d``, and filler prototypes are made orthogonal to ``w`` so that
no filler teaches the cue by accident. Fillers are not neutral under difference in means with a
fixed number of kept classes: each filler's score includes ``-(sum of the other classes' effects)
/ (classes - 1)`` (about -0.05 here) plus estimation noise of about 0.06 at 64 models (largely from
the helpful class being kept by more or fewer of a filler's "with" models), so the planted effects
are made much larger than that. With ``cue=0`` the harmful class scores about -0.07 (seeds 0-3),
like a filler.

Measured with this generator (``pretrain_group("mlp", model_options={"width": 16, "depth": 1})``,
``TrainRecipe(epochs=40, lr=0.05, batch_size=64)`` with its defaults momentum 0.9, weight decay
5e-4, cosine schedule, then ``transfer_fixed_feature(l2=1e-2)``; 64 models, each keeping 4 of the
8 source classes, masks ``subset_masks(seed, range(64), 8, 0.5)``, model seeds 0-63;
difference-in-means influence on the mean probability of the correct class over ``t``'s 50 test
images; problem seeds 0-19):

* helpful ranks first in 19/20 seeds (+0.10 to +0.51). In seed 14 it scores +0.10 and a filler
  +0.18;
* harmful ranks last in 20/20 seeds (-0.30 to -0.58, mean -0.40; fillers -0.20 to +0.22; its
  smallest margin below the lowest filler is 0.16). Its influence averaged over all target
  classes is also negative (-0.17 to -0.30);
* the same ranks hold in 6/6 seeds (0-5) with width 8 (harmful -0.26 to -0.37), width 32 (-0.34
  to -0.55) and two hidden layers of width 16 (-0.32 to -0.44).

Counterfactual retraining (same recipe, all 8 source classes vs. all minus one, 10 models paired
by model seed, mean probability of the correct class; paired difference with 95% t-interval):
problem seed 0: removing harmful raises ``t`` from 0.51 to 0.89 (+0.39 [+0.29, +0.49]) and all
targets from 0.60 to 0.78 (+0.19 [+0.14, +0.24]); removing helpful lowers ``t`` to 0.33 (-0.18
[-0.28, -0.08]) and all targets to 0.52 (-0.08 [-0.12, -0.04]).

A ``small_cnn`` (width 4) backbone does *not* reproduce the planted effects (helpful +0.06 to
+0.16, harmful -0.05 to +0.04 over seeds 0-3 of a scratch version) and trains about 10x slower; use
the MLP recipe above. Full fine-tuning
(``finetune_group``) has not been measured on this problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .images import LabeledImages
from .suites import TransferData


@dataclass(frozen=True)
class PlantedTruth:
    """What :func:`planted_transfer_problem` planted (class indices into source / target).

    ``target_class`` is ``t``, ``confused_with`` is ``u``; ``target_prototypes`` is
    ``float32 [target classes, 1, H, W]`` in [0, 1], the noise-free class patterns (without the
    cue). ``cue_pattern`` is ``float32 [1, H, W]`` of +-1, the cue ("watermark") direction;
    target images carry ``+-cue`` times it and harmful source images ``+-harmful_cue`` times it.
    """

    target_class: int
    confused_with: int
    helpful_source_class: int
    harmful_source_class: int
    filler_source_classes: tuple[int, ...]
    target_class_name: str
    helpful_source_name: str
    harmful_source_name: str
    target_prototypes: np.ndarray
    cue_pattern: np.ndarray


def _draw(rng: np.random.Generator, prototypes: np.ndarray, noise: float) -> np.ndarray:
    """Noisy uint8 samples ``[n, 1, H, W]``, one per prototype of ``prototypes [n, H, W]``."""
    pixels = prototypes + noise * rng.standard_normal(prototypes.shape)
    return np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)[:, None]


def _balanced_signs(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` values of +-1 in random order, half of each (one more ``+1`` when ``n`` is odd)."""
    return rng.permutation(np.where(np.arange(n) < (n + 1) // 2, 1.0, -1.0))


def planted_transfer_problem(
    seed: int,
    *,
    num_target_classes: int = 4,
    num_filler_source_classes: int = 6,
    image_size: int = 8,
    n_per_class: int = 100,
    target_train_per_class: int = 5,
    target_test_per_class: int = 50,
    noise: float = 0.3,
    contrast: float = 0.15,
    spread: float = 0.35,
    cue: float = 0.12,
    harmful_cue: float = 0.4,
) -> tuple[TransferData, PlantedTruth]:
    """Build the planted problem (see the module docstring) and its ground truth.

    Args:
        seed: seeds every random choice (prototypes, cue, noise, which classes are planted, order).
        num_target_classes: target classes (at least 2: ``t`` and ``u``).
        num_filler_source_classes: unrelated source classes besides the helpful and harmful one
            (at least 1: the harmful class is built from filler prototypes).
        image_size: side of the square single-channel images (at least 2).
        n_per_class: examples per source class.
        target_train_per_class / target_test_per_class: target examples per class.
        noise: standard deviation of the Gaussian pixel noise (pixels in [0, 1]).
        contrast: half the per-pixel difference between the prototypes of ``t`` and ``u``;
            smaller is harder to separate without good features.
        spread: per-pixel standard deviation of the random prototypes around grey 0.5; it keeps
            every other pair of classes much further apart than ``t`` and ``u``.
        cue: per-pixel amplitude of the spurious cue on target images (label-correlated for
            ``t``/``u`` in the training split, reversed in the test split); 0 removes the harm.
        harmful_cue: per-pixel amplitude of the cue on the harmful source class.

    Returns:
        ``(TransferData, PlantedTruth)``; the source has ``num_filler_source_classes + 2`` classes.
    """
    if num_target_classes < 2:
        raise DataError("planted_transfer_problem(): num_target_classes must be >= 2 (t and u).")
    if num_filler_source_classes < 1:
        raise DataError("planted_transfer_problem(): num_filler_source_classes must be >= 1 (the"
                        " harmful class is made of filler images stamped with the cue).")
    if image_size < 2:
        raise DataError("planted_transfer_problem(): image_size must be >= 2.")
    if min(n_per_class, target_train_per_class, target_test_per_class) < 2:
        raise DataError("planted_transfer_problem(): every per-class count must be >= 2.")
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size)
    pixels = image_size * image_size

    def random_prototype() -> np.ndarray:
        return np.clip(0.5 + spread * rng.standard_normal(shape), 0.0, 1.0)

    t, u = (int(k) for k in rng.choice(num_target_classes, 2, replace=False))
    prototypes = np.stack([random_prototype() for _ in range(num_target_classes)])
    base = np.clip(prototypes[t], contrast, 1.0 - contrast)
    d_signs = _balanced_signs(rng, pixels)
    direction = contrast * d_signs.reshape(shape)
    prototypes[t], prototypes[u] = base + direction, base - direction
    # The cue: balanced within d's + pixels and within its - pixels, so (for even halves) it is
    # orthogonal to both d and a constant image.
    cue_pattern = np.empty(pixels)
    for sign in (1.0, -1.0):
        where = np.flatnonzero(d_signs == sign)
        cue_pattern[where] = _balanced_signs(rng, where.size)
    cue_pattern = cue_pattern.reshape(shape)

    target_names = tuple(f"target{k}" for k in range(num_target_classes))

    def target_split(n: int, t_polarity: float) -> LabeledImages:
        labels = np.repeat(np.arange(num_target_classes), n)
        polarity = rng.choice([-1.0, 1.0], size=labels.size)
        polarity[labels == t], polarity[labels == u] = t_polarity, -t_polarity
        images = prototypes[labels] + (cue * polarity)[:, None, None] * cue_pattern
        return LabeledImages(_draw(rng, images, noise), labels, target_names, "planted-target")

    target_train = target_split(target_train_per_class, +1.0)
    target_test = target_split(target_test_per_class, -1.0)

    # Fillers get no cue: their random deviation from grey is made orthogonal to the cue pattern
    # (before clipping), so the harmful class is the only source of cue sensitivity.
    fillers = []
    for _ in range(num_filler_source_classes):
        deviation = spread * rng.standard_normal(shape)
        deviation -= (deviation * cue_pattern).mean() * cue_pattern
        fillers.append(np.clip(0.5 + deviation, 0.0, 1.0))
    harmful_base = np.stack(fillers)[rng.integers(num_filler_source_classes, size=n_per_class)]
    harmful_polarity = rng.choice([-1.0, 1.0], size=n_per_class)
    harmful = harmful_base + (harmful_cue * harmful_polarity)[:, None, None] * cue_pattern

    helpful_name = f"helpful({target_names[t]})"
    harmful_name = "harmful(cue)"
    blocks = {
        helpful_name: _draw(rng, np.repeat(prototypes[t][None], n_per_class, axis=0), noise),
        harmful_name: _draw(rng, harmful, noise),
    }
    for k, filler in enumerate(fillers):
        blocks[f"filler{k}"] = _draw(rng, np.repeat(filler[None], n_per_class, axis=0), noise)
    names = [list(blocks)[k] for k in rng.permutation(len(blocks))]
    source = LabeledImages(
        np.concatenate([blocks[n] for n in names]),
        np.repeat(np.arange(len(names)), n_per_class),
        tuple(names),
        "planted-source",
    )
    truth = PlantedTruth(
        target_class=t,
        confused_with=u,
        helpful_source_class=names.index(helpful_name),
        harmful_source_class=names.index(harmful_name),
        filler_source_classes=tuple(i for i, n in enumerate(names) if n.startswith("filler")),
        target_class_name=target_names[t],
        helpful_source_name=helpful_name,
        harmful_source_name=harmful_name,
        target_prototypes=prototypes.astype(np.float32)[:, None],
        cue_pattern=cue_pattern.astype(np.float32)[None],
    )
    return TransferData(source, target_train, target_test), truth
