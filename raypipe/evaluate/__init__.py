"""One evaluation from request to results: the driver, the run state searches see, the manifest, and
`raypipe submit` for a run as a Ray job.

The run types, in the order a run meets them:

- `engine.rundir.Request`: what the user asked (spec, dataset, output, search, options), saved in the run
  directory so that `--resume` finishes the same run;
- `engine.rundir.RunDir`: the run directory, local or a URI, the one owner of every file a run writes;
- `engine.plan.RunOptions`: how to execute (shared prefixes, identical-output reuse, the cache, pool and
  batch caps);
- `evaluate.context.RunPlan`, `Counters` and `RunContext`: what the run is, what it has done, and the view
  of both a search gets (`search.base.SearchContext`);
- `ray.pipeline.RunControl`: the actor through which the driver steers a streaming execution (drops,
  timeouts);
- `evaluate.driver.RunResult`: what `evaluate` returns (the run directory, configs, manifest);
- `report.reading.RunView`: a finished run read back, for the CLI, reports and monitoring.
"""
