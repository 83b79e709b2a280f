"""Runnable examples from the README: your own stage, your own task (the tests execute them)."""
