"""The holdout renderer: ID cards drawn unlike generate_dataset's, for evaluation that is never tuned on."""

from raypipe.tasks.idcard.holdout.degrade import HOLDOUT_PROFILES
from raypipe.tasks.idcard.holdout.generator import HoldoutItem, generate_holdout, render_holdout_item

__all__ = ["HOLDOUT_PROFILES", "HoldoutItem", "generate_holdout", "render_holdout_item"]
