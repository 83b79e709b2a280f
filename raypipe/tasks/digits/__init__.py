"""Handwritten 8x8 digits from scikit-learn: a small, fast task for the engine's tests (`task.DigitsTask`)."""
