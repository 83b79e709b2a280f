"""optimization: train, distill, quantize and export models, then compare them in raypipe."""
