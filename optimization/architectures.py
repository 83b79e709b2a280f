"""The orientation CNNs: one plain convolutional family, sized for the model (teacher) and the student.

Position matters here (the portrait sits top right on an upright card, the ID number along the bottom),
so the features are flattened rather than globally pooled: pooling everything would forget where things
are, and with it the difference between 0 and 180 degrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from raypipe.tasks.idcard.stages.orient_cnn import ROTATIONS


@dataclass(frozen=True)
class Architecture:
    """Four 3x3 conv + 2x2 max-pool blocks of `widths` filters, then a `dense` hidden layer and 4 logits."""

    name: str
    widths: tuple[int, int, int, int]
    dense: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CNN = Architecture("cnn", widths=(16, 32, 64, 64), dense=32)
STUDENT = Architecture("student", widths=(8, 16, 16, 16), dense=16)


def build_model(keras: ModuleType, architecture: Architecture, image_size: int) -> Any:
    """A Keras model from (image_size, image_size, 1) floats in [0, 1] to 4 rotation logits."""
    layers = keras.layers
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = inputs
    for width in architecture.widths:
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(architecture.dense, activation="relu")(x)
    outputs = layers.Dense(len(ROTATIONS), name="logits")(x)
    return keras.Model(inputs, outputs, name=f"orient_{architecture.name.replace('-', '_')}")
