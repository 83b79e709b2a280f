"""Channel stages: keep the colour image, or reduce it to gray or to one of its red, green, blue channels."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from raypipe.engine.models import engine_versions
from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.stages.imaging import IMAGE_STAGE_RESOURCES, as_gray


class Original(Stage):
    """The image as it is (colour stays colour, gray stays gray)."""

    resources: ClassVar[Resources] = IMAGE_STAGE_RESOURCES

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


class Gray(Stage):
    """Luminance as a 2-D uint8 image; gray input passes through unchanged."""

    resources: ClassVar[Resources] = IMAGE_STAGE_RESOURCES

    @classmethod
    def cache_identity(cls, **_: object) -> dict[str, object]:
        return {"engines": engine_versions("cv2")}  # OpenCV's luminance weights

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return as_gray(image)


class _SingleChannel(Stage):
    """One channel of an RGB image as a 2-D uint8 image; gray input has no channel to pick and passes."""

    resources: ClassVar[Resources] = IMAGE_STAGE_RESOURCES
    channel_index: ClassVar[int]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return image
        return np.ascontiguousarray(image[:, :, self.channel_index])


class Red(_SingleChannel):
    """The red channel."""

    channel_index: ClassVar[int] = 0


class Green(_SingleChannel):
    """The green channel."""

    channel_index: ClassVar[int] = 1


class Blue(_SingleChannel):
    """The blue channel."""

    channel_index: ClassVar[int] = 2
