"""raypipe: evaluate every configuration of a multi-stage inference pipeline on Ray."""
