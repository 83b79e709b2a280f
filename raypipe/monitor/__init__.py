"""Monitoring a deployed configuration: reference profiles, drift tests, mix and objective estimates."""
