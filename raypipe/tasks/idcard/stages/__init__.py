"""The idcard task's image and OCR stages, one module per stage kind; none of them imports Ray."""
