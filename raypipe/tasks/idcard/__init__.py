"""The ID-card task (see `task.IdCardTask`)."""
