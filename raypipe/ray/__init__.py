"""The only package that imports Ray: the cluster connection, the Ray Data pipeline (operators, actors and
their watchdog), live metrics, jobs, and calibration."""
