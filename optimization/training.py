"""`train-orient`: train the orientation CNN on generated cards, seeded, and record it in the manifest."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from optimization.architectures import CNN, Architecture, build_model
from optimization.artifacts import record_artifact, replace_atomically
from optimization.orient_data import DataProfile, OrientData, data_digest, load_orient_data
from optimization.runtime import import_keras
from raypipe.tasks.idcard.stages.orient_cnn import artifact_name, as_batch

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    """How much data and training; the defaults take a few minutes on 2 CPU cores."""

    cards: int = 1500
    holdout_cards: int = 300
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    image_size: int = 64
    profile: str = "mixed"

    def train_profile(self) -> DataProfile:
        return DataProfile(self.cards, self.seed, "train", self.profile, self.image_size)

    def holdout_profile(self) -> DataProfile:
        return DataProfile(self.holdout_cards, self.seed, "holdout", self.profile, self.image_size)


QUICK_SETTINGS = TrainSettings(cards=200, holdout_cards=50, epochs=5)
DATA_FIELDS = ("cards", "holdout_cards", "seed", "image_size", "profile")


def with_data_of(settings: TrainSettings, entry: dict | None) -> TrainSettings:
    """`settings` with the data fields (cards, seed, size, profile) a recorded model was trained on."""
    recorded = (entry or {}).get("training") or {}
    return replace(settings, **{k: recorded[k] for k in DATA_FIELDS if k in recorded})


def cache_dir(models_dir: Path) -> Path:
    return models_dir / "cache"


def training_data(models_dir: Path, settings: TrainSettings) -> tuple[OrientData, OrientData]:
    """(train, held-out) arrays, generated once per models directory and cached."""
    train = load_orient_data(settings.train_profile(), cache_dir(models_dir))
    holdout = load_orient_data(settings.holdout_profile(), cache_dir(models_dir))
    return train, holdout


def fit(model: Any, data: OrientData, targets: np.ndarray, loss: Any, settings: TrainSettings) -> float:
    """Train `model` on (images, targets) with Adam; returns seconds spent."""
    _, keras = import_keras()
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss)
    started = time.perf_counter()
    model.fit(
        as_batch(data.images),
        targets,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        verbose=0,
    )
    return time.perf_counter() - started


def predict_logits(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a Keras model over uint8 model inputs, in batches."""
    parts = [
        np.asarray(model(as_batch(images[i : i + batch_size]), training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the true class: finer than accuracy when accuracy saturates."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


def weights_digest(model: Any) -> str:
    """SHA-256 of the weights alone (file bytes also hold a save time): the reproducibility check."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def save_keras(model: Any, path: Path) -> Path:
    """Save the inference model only (no optimizer state: that would double the file)."""
    _, keras = import_keras()
    clean = keras.Model.from_config(model.get_config())  # clone_model would also restore the compile config
    clean.set_weights(model.get_weights())
    return replace_atomically(lambda temporary: clean.save(temporary), path)


def evaluation(model: Any, holdout: OrientData) -> dict[str, float]:
    logits = predict_logits(model, holdout.images)
    return {
        "holdout_accuracy": accuracy(logits, holdout.labels),
        "holdout_log_loss": log_loss(logits, holdout.labels),
    }


def provenance(settings: TrainSettings, train: OrientData, holdout: OrientData, arch: Architecture) -> dict:
    """What the manifest records about how a model was made."""
    return {
        "seed": settings.seed,
        "training": asdict(settings),
        "data": train.profile.as_dict(),
        "data_sha256": data_digest(train),
        "holdout_data": holdout.profile.as_dict(),
        "architecture": arch.as_dict(),
        "command": "python -m optimization train-orient",
    }


def train_orient(
    models_dir: Path, settings: TrainSettings = TrainSettings(), progress: Progress = print
) -> dict:
    """Train the orientation CNN into `models_dir`/orient-cnn.keras; returns its manifest entry."""
    progress(
        f"generating {settings.cards} + {settings.holdout_cards} cards x 4 rotations ({settings.profile})"
    )
    train, holdout = training_data(models_dir, settings)
    _, keras = import_keras(settings.seed)
    model = build_model(keras, CNN, settings.image_size)
    progress(f"training {CNN.name} ({model.count_params():,} parameters, {settings.epochs} epochs)")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    seconds = fit(model, train, train.labels, loss, settings)
    scores = evaluation(model, holdout)
    path = save_keras(model, models_dir / artifact_name("cnn", "keras"))
    entry = record_artifact(
        path,
        model="cnn",
        format="keras",
        parameters=model.count_params(),
        weights_sha256=weights_digest(model),
        train_seconds=round(seconds, 1),
        **scores,
        **provenance(settings, train, holdout, CNN),
    )
    progress(f"{path}: held-out accuracy {scores['holdout_accuracy']:.4f} ({holdout.profile.images} images)")
    return entry
