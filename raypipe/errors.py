"""The exceptions raypipe raises for its users: each says what was wrong, where, and what to do."""


class RaypipeError(Exception):
    """Base of every error raypipe raises on purpose."""


class ConfigError(RaypipeError):
    """A pipeline spec is invalid; the message lists every problem with its YAML path."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class UnknownComponentError(RaypipeError):
    """A stage implementation name that no registry entry, import path or plugin provides."""


class StageError(RaypipeError):
    """A stage implementation cannot run here (a missing package, language pack or model)."""


class DatasetError(RaypipeError):
    """A dataset cannot be found or read."""
