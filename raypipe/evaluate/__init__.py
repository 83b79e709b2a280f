"""One evaluation from request to results: the driver, the run state searches see, the manifest, and
`raypipe submit` for a run as a Ray job."""
