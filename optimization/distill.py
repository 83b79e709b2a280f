"""`distill`: a student CNN with >= 4x fewer parameters, trained on the teacher's softened outputs.

The teacher is the orientation CNN of `train-orient`. Two students start from the same seed and data;
one learns from the teacher's logits softened by temperature T (Hinton et al.'s loss, weighted by
alpha on the hard labels), the other from the hard labels alone: the baseline distillation must beat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optimization.architectures import STUDENT, build_model
from optimization.artifacts import artifact_entry, record_artifact
from optimization.orient_data import OrientData
from optimization.runtime import import_keras
from optimization.training import (
    Progress,
    TrainSettings,
    evaluation,
    fit,
    predict_logits,
    provenance,
    save_keras,
    train_orient,
    training_data,
    weights_digest,
    with_data_of,
)
from raypipe.tasks.idcard.stages.orient_cnn import ROTATIONS, artifact_name

MIN_COMPRESSION = 4.0


def distillation_loss(keras: Any, temperature: float, alpha: float) -> Any:
    """Loss over y_true = [one-hot label | teacher logits]: alpha * CE(label) + (1-alpha) * T^2 * CE(soft)."""
    ops = keras.ops
    classes = len(ROTATIONS)

    def loss(y_true: Any, y_pred: Any) -> Any:
        hard, teacher_logits = y_true[:, :classes], y_true[:, classes:]
        soft_targets = ops.softmax(teacher_logits / temperature, axis=-1)
        soft = -ops.sum(soft_targets * ops.log_softmax(y_pred / temperature, axis=-1), axis=-1)
        hard_loss = -ops.sum(hard * ops.log_softmax(y_pred, axis=-1), axis=-1)
        return alpha * hard_loss + (1.0 - alpha) * temperature**2 * soft

    return loss


def load_teacher(models_dir: Path, settings: TrainSettings, progress: Progress) -> Any:
    """The trained orientation CNN; trained first (with `settings`) when the models dir has none."""
    path = models_dir / artifact_name("cnn", "keras")
    if not path.is_file():
        progress(f"{path} is missing: training the teacher first")
        train_orient(models_dir, settings, progress)
    _, keras = import_keras()
    return keras.saving.load_model(path, compile=False)


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Share of images where two models pick the same class."""
    return float(np.mean(np.argmax(logits, axis=1) == np.argmax(reference, axis=1)))


def train_student(
    name: str, targets: np.ndarray, loss: Any, train: OrientData, holdout: OrientData, settings: TrainSettings
) -> tuple[Any, dict]:
    """One student from the seed: returns the model and its scores on the held-out set."""
    _, keras = import_keras(settings.seed)
    student = build_model(keras, STUDENT, settings.image_size)
    seconds = fit(student, train, targets, loss, settings)
    return student, {"train_seconds": round(seconds, 1), **evaluation(student, holdout)}


def distill(
    models_dir: Path,
    settings: TrainSettings = TrainSettings(),
    temperature: float = 3.0,
    alpha: float = 0.0,
    progress: Progress = print,
) -> dict[str, dict]:
    """Train the distilled and the hard-label students; returns their manifest entries by model name."""
    teacher = load_teacher(models_dir, settings, progress)
    settings = with_data_of(settings, artifact_entry(models_dir, artifact_name("cnn", "keras")))
    train, holdout = training_data(models_dir, settings)
    teacher_train = predict_logits(teacher, train.images)
    _, keras = import_keras()
    one_hot = np.eye(len(ROTATIONS), dtype=np.float32)[train.labels]
    runs = {
        "student": (
            np.concatenate([one_hot, teacher_train], axis=1),
            distillation_loss(keras, temperature, alpha),
        ),
        "student-hard": (train.labels, keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    }
    entries = {}
    for name, (targets, loss) in runs.items():
        how = f"T={temperature:g}, alpha={alpha:g}" if name == "student" else "hard labels"
        progress(f"training {name} ({how})")
        student, scores = train_student(name, targets, loss, train, holdout, settings)
        distillation = {"temperature": temperature, "alpha": alpha} if name == "student" else None
        entries[name] = save_student(models_dir, name, student, teacher, scores, distillation, settings)
        progress(
            f"{entries[name]['file']}: held-out accuracy {scores['holdout_accuracy']:.4f}, "
            f"{entries[name]['compression']:.1f}x fewer parameters"
        )
    return entries


def save_student(
    models_dir: Path,
    name: str,
    student: Any,
    teacher: Any,
    scores: dict,
    distillation: dict | None,
    settings: TrainSettings,
) -> dict:
    """Save a student and record it with its compression and its agreement with the teacher."""
    ratio = teacher.count_params() / student.count_params()
    if ratio < MIN_COMPRESSION:
        raise ValueError(f"the student has only {ratio:.1f}x fewer parameters than the teacher")
    train, holdout = training_data(models_dir, settings)
    scores["teacher_agreement"] = agreement(
        predict_logits(student, holdout.images), predict_logits(teacher, holdout.images)
    )
    path = save_keras(student, models_dir / artifact_name(name, "keras"))
    return record_artifact(
        path,
        model=name,
        format="keras",
        parameters=student.count_params(),
        teacher_parameters=teacher.count_params(),
        compression=round(ratio, 2),
        distillation=distillation,
        weights_sha256=weights_digest(student),
        **scores,
        **{**provenance(settings, train, holdout, STUDENT), "command": "python -m optimization distill"},
    )
