"""Features for FID/KID/MMD where no Inception weights are at hand: the penultimate layer of a
small conv classifier trained on the data set's own labels.

The classifier is trained once by cross-entropy through `vaelab.training.fit` (progress,
seeding, the NaN guard, a metrics log, and resume of an interrupted training from its run
directory), then cached by content under ``cache_dir()/feature-nets/`` as safetensors with its
held-out accuracy, which the feature name reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from ..config import TrainConfig
from ..data import TensorData
from ..data.base import ImageData, cache_dir, to_float
from ..errors import CheckpointError, DataError
from ..estimators import ObjectiveTerms
from ..registry import FEATURE_EXTRACTORS
from ..training import fit
from .inception import INCEPTION_ENV
from .sample_quality import FeatureExtractor

# Bumped whenever a change to the network or its training changes the trained weights, so that
# stale cached classifiers are not reused. 2: trained by `vaelab.training.fit`.
CLASSIFIER_VERSION = 2
POOLED_FROM = 8  # px: the largest map the 2×2 average pool takes (`extra_downsamplings`)


@dataclass(frozen=True)
class ClassifierConfig:
    """How the feature classifier is built and trained (all of it goes into the cache key)."""

    widths: tuple[int, int, int] = (32, 64, 128)  # conv channels; the last two convs stride 2
    feature_dim: int = 128  # the penultimate layer: the features
    epochs: int = 5
    min_steps: int = 800  # small data sets train for more epochs, to at least this many steps
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    holdout_fraction: float = 0.1  # of the training set, for the reported accuracy
    seed: int = 0


def extra_downsamplings(size: int) -> int:
    """Stride-2 convolutions beyond the first two, so that the map before the pool is at
    most `POOLED_FROM` px: 0 up to 32 px (8×8 digits, 28×28 MNIST), 1 at 64×64. Without them
    a 64×64 net's 9-px receptive field sees only part of a dSprites shape and its average-
    pooled features tell the shapes apart at 0.53 held-out accuracy."""
    size, extra = math.ceil(size / 4), 0
    while size > POOLED_FROM:
        size, extra = math.ceil(size / 2), extra + 1
    return extra


class SmallClassifier(nn.Module):
    """3 conv layers (3×3, ReLU; the last two stride 2), `extra_downsamplings(size)` more
    stride-2 ones for large images → adaptive 2×2 average pool → `feature_dim` (ReLU) →
    logits.

    The adaptive pool makes it work for any image size (8×8, 28×28, 64×64, ...);
    `body` maps images to the penultimate features, `head` those to class logits.
    """

    def __init__(self, channels: int, num_classes: int, config: ClassifierConfig, size: int):
        super().__init__()
        w1, w2, w3 = config.widths
        deeper = [
            layer
            for _ in range(extra_downsamplings(size))
            for layer in (nn.Conv2d(w3, w3, 3, stride=2, padding=1), nn.ReLU())
        ]
        self.body = nn.Sequential(
            nn.Conv2d(channels, w1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w2, w3, 3, stride=2, padding=1),
            nn.ReLU(),
            *deeper,
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * w3, config.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class CrossEntropyObjective(nn.Module):
    """The trainer's model for a classifier: forward((images, labels)) → per-example
    cross-entropy −log softmax(f(x))_y as the loss, and the 0/1 error beside it."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, batch: tuple[Tensor, Tensor]) -> ObjectiveTerms:
        images, labels = batch
        logits = self.classifier(to_float(images))
        loss = F.cross_entropy(logits, labels, reduction="none")
        return ObjectiveTerms(loss, {"error": (logits.argmax(1) != labels).float()})


class DatasetClassifierFeatures(FeatureExtractor):
    """Penultimate-layer features of a `SmallClassifier` trained on `data`'s labels.

    The trained weights are cached in ``cache_dir()/feature-nets/`` under a name that hashes
    the config, the network's version and the data (images and labels), so a second
    construction loads them; `trained` says which happened and `path` where the file is. The
    training's run directory (checkpoint, metrics log) is beside it, with the suffix ``.fit``.
    The held-out accuracy (on a seeded `holdout_fraction` of `data`, not trained on) is part
    of `name`. Constructing one leaves the caller's random stream as it was.
    """

    def __init__(
        self,
        data: ImageData,
        device: torch.device | str = "cpu",
        config: ClassifierConfig = ClassifierConfig(),  # noqa: B008 — frozen, so shared safely
        progress: bool = True,
    ):
        if data.labels is None:
            raise DataError(
                f"{data.name} has no labels to train a feature classifier on; give Inception "
                f"weights (inception_weights or ${INCEPTION_ENV}) for FID on it"
            )
        num_classes = int(data.labels.max()) + 1
        if num_classes < 2 or int(data.labels.min()) < 0:
            raise DataError(f"{data.name}: the feature classifier needs labels 0..K-1 with K ≥ 2")
        channels, height, width = data.shape
        shape = f"{height}x{width}x{channels}"
        key = _cache_key(data, config)
        self.path = cache_dir() / "feature-nets" / f"{data.name}-{shape}-{key}.safetensors"
        device = torch.device(device)
        self.trained = not self.path.exists()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)  # a seeded initialisation
            classifier = SmallClassifier(channels, num_classes, config, min(height, width))
            if self.trained:
                run_dir = self.path.with_suffix(".fit")
                self.held_out_accuracy = train_classifier(
                    classifier, data, config, run_dir, device, progress
                )
        if self.trained:
            metadata = {"held_out_accuracy": self.held_out_accuracy, "dataset": data.name}
            metadata |= {"shape": shape, "config": dataclasses.asdict(config)}
            tensors = {f"model.{k}": v for k, v in classifier.state_dict().items()}
            save_checkpoint(self.path, tensors, metadata)
        else:
            tensors, metadata = load_checkpoint(self.path)
            load_model_weights(classifier, tensors, str(self.path))
            if not isinstance(metadata.get("held_out_accuracy"), float):
                raise CheckpointError(f"{str(self.path)!r} lacks its held-out accuracy")
            self.held_out_accuracy = metadata["held_out_accuracy"]
        name = (
            f"classifier({data.name}, {shape}, {config.feature_dim}-d, "
            f"held-out acc {self.held_out_accuracy:.3f})"
        )
        super().__init__(name, classifier.body, device)


def _cache_key(data: ImageData, config: ClassifierConfig) -> str:
    """Hash of the config, the network and its version, and the exact data (images, labels)."""
    h = hashlib.sha256()
    size = min(data.shape[1:])
    architecture = {"network": SmallClassifier.__name__, "version": CLASSIFIER_VERSION}
    if extra_downsamplings(size):  # the nets of smaller images keep their cache names
        architecture["extra_downsamplings"] = extra_downsamplings(size)
    h.update(json.dumps([architecture, dataclasses.asdict(config)], sort_keys=True).encode())
    for tensor in (data.images, data.labels):
        array = np.ascontiguousarray(tensor.cpu().numpy())
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array)
    return h.hexdigest()[:16]


def train_classifier(
    classifier: SmallClassifier,
    data: ImageData,
    config: ClassifierConfig,
    run_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> float:
    """Train by cross-entropy with Adam on all but a seeded held-out part of `data`, in the
    run directory `run_dir` (resumed if it holds an interrupted training); return the
    held-out accuracy. The split and the batch order follow `config.seed`; small data sets
    train for more epochs, so that there are at least `config.min_steps` steps."""
    order = torch.from_numpy(np.random.default_rng(config.seed).permutation(len(data)))
    n_held = max(1, round(config.holdout_fraction * len(data)))
    held_out, train = order[:n_held], order[n_held:]
    if len(train) < 1:
        raise DataError(f"{data.name}: too few images ({len(data)}) to train a feature classifier")
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        device=str(device),
        eval_every=epochs,  # the held-out accuracy once, at the end
        progress=progress,
    )
    settings = dataclasses.asdict(config) | {"widths": list(config.widths)}  # as JSON reads it
    state = fit(
        CrossEntropyObjective(classifier),
        TensorData(data.images[train], data.labels[train]),
        cfg,
        run_dir,
        evaluate=lambda objective: {
            "held_out_accuracy": _accuracy(objective.classifier, data, held_out)
        },
        description={"dataset": data.name, "classifier": settings},
    )
    return state.last_test["held_out_accuracy"]


@torch.no_grad()
def _accuracy(classifier: nn.Module, data: ImageData, index: Tensor) -> float:
    device = next(classifier.parameters()).device
    correct = 0
    for batch in index.split(500):
        logits = classifier(data.batch(batch).to(device))
        correct += int((logits.argmax(1).cpu() == data.labels[batch]).sum())
    return correct / len(index)


@FEATURE_EXTRACTORS.register("classifier")
def _classifier(data, inception_weights, device, progress) -> DatasetClassifierFeatures:
    return DatasetClassifierFeatures(data, device, progress=progress)
