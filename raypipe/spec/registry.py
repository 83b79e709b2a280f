"""Registries of stages, tasks and search strategies: built-ins, entry points, classes registered at run time.

Built-ins are "module:Class" strings so that naming a component never imports its heavy library. A name
may be taken once: registering (or publishing as a plugin) a name that a built-in holds is refused, so a
plugin can never silently shadow a built-in. A stage choice may also name its class directly as
"package.module:Class" in the spec; that imports the module, like an import statement.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from raypipe.errors import RaypipeError, UnknownComponentError

if TYPE_CHECKING:
    from raypipe.spec.task import Task

STAGE_GROUP = "raypipe.stages"
TASK_GROUP = "raypipe.tasks"
SEARCH_GROUP = "raypipe.searches"

# Task-neutral stages only: each task declares its own kinds (`Task.stages`), so `raypipe tasks digits` lists
# digits' stages and idcard's OCR stages live in its package.
STAGE_BUILTINS: dict[str, dict[str, str]] = {
    # Zero-cost stages for measuring the engine's own overhead (benchmarks/scale.py).
    "noop": {"tag": "raypipe.engine.noop:Tag", "mark": "raypipe.engine.noop:Mark"},
}
OWN_DISTRIBUTION = "raypipe"  # built-in tasks and searches are its own entry points (pyproject.toml)

_STAGES: dict[str, dict[str, type]] = {}
_TASKS: dict[str, type] = {}
_SEARCHES: dict[str, type] = {}

T = TypeVar("T", bound=type)


class RegistryError(RaypipeError):
    """A registration that would shadow a built-in, or a class of the wrong kind."""


def import_target(target: str) -> Any:
    """Import "package.module:Class"; the error names the target and what failed."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise UnknownComponentError(f"'{target}' is not an import path: write it as 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownComponentError(f"cannot import '{module_name}' for '{target}': {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UnknownComponentError(f"module '{module_name}' has no '{attr}' (from '{target}')") from exc


def unknown_message(what: str, name: str, names: list[str]) -> str:
    """lm-eval's message: Unknown x 'n'. Did you mean ...? Available: ..."""
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {what} '{name}'.{hint} Available: {', '.join(sorted(names)) or 'none'}."


@cache
def _entry_points(group: str) -> tuple[dict[str, str], dict[str, str]]:
    """(raypipe's own, everyone else's) entry points of `group`: built-ins are published the way a plugin
    is, and a plugin is whatever another distribution publishes."""
    own, plugins = {}, {}
    for ep in entry_points(group=group):
        is_own = ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION
        (own if is_own else plugins)[ep.name] = ep.value
    return own, plugins


def _plugins(group: str) -> dict[str, str]:
    return _entry_points(group)[1]


def builtins_of(group: str) -> dict[str, str]:
    """raypipe's own tasks or searches (TASK_GROUP, SEARCH_GROUP), by name."""
    return _entry_points(group)[0]


def _refuse_builtin(name: str, builtins: dict[str, Any], what: str) -> None:
    if name in builtins:
        raise RegistryError(f"{what} '{name}' is a built-in: register yours under another name")


# -- stages -------------------------------------------------------------------------------------------------


def _task_stages(task: Task | None) -> dict[str, dict[str, str]]:
    return dict(task.stages) if task is not None else {}


def stage_builtins(kind: str, task: Task | None = None) -> dict[str, str]:
    """The built-in choices of a stage kind: the generic ones and the task's own."""
    return {**STAGE_BUILTINS.get(kind, {}), **_task_stages(task).get(kind, {})}


def builtin_stage_names(kind: str) -> set[str]:
    """Every built-in choice name of `kind`, the task-neutral ones and those of every built-in task: a class
    registered before its task is known may not take any of them."""
    names = set(STAGE_BUILTINS.get(kind, {}))
    for target in builtins_of(TASK_GROUP).values():
        names |= set(import_target(target).stages.get(kind, {}))
    return names


def _stage_plugins(kind: str, task: Task | None) -> dict[str, str]:
    """Entry points named "kind.name" in group raypipe.stages; one that takes a built-in's name is refused."""
    found = {}
    for full, target in _plugins(STAGE_GROUP).items():
        plugin_kind, _, name = full.partition(".")
        if plugin_kind == kind and name:
            _refuse_builtin(name, stage_builtins(kind, task), f"{kind} plugin '{full}' = '{target}':")
            found[name] = target
    return found


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make `cls` the implementation of choice `name` for stages of `kind`.

    Works in a notebook too: the spec's choice carries the class itself to the actors. Registering a name
    again replaces your own earlier registration (re-running a cell); a built-in's name is refused.
    """

    def decorate(cls: T) -> T:
        _refuse_builtin(name, builtin_stage_names(kind), f"{kind} stage")
        if not callable(cls):
            raise RegistryError(f"{cls!r} is not a class with __call__: a stage is called on each item")
        _STAGES.setdefault(kind, {})[name] = cls
        cls.registered_as = (kind, name)
        return cls

    return decorate


def _stage_entries(kind: str, task: Task | None) -> dict[str, type | str]:
    return {**stage_builtins(kind, task), **_stage_plugins(kind, task), **_STAGES.get(kind, {})}


def available(kind: str, task: Task | None = None) -> list[str]:
    """Names that resolve for stages of `kind`, sorted."""
    return sorted(_stage_entries(kind, task))


def kinds(task: Task | None = None) -> list[str]:
    """Every stage kind that has at least one implementation."""
    plugin_kinds = {full.partition(".")[0] for full in _plugins(STAGE_GROUP)}
    return sorted({*STAGE_BUILTINS, *_task_stages(task), *plugin_kinds, *_STAGES})


def resolve(kind: str, name: str, task: Task | None = None) -> type:
    """The implementation class of choice `name` for a `kind` stage; "module:Class" names import directly."""
    if ":" in name:
        return import_target(name)
    entry = _stage_entries(kind, task).get(name)
    if entry is None:
        names = available(kind, task)
        if not names:
            raise UnknownComponentError(
                f"Unknown stage kind '{kind}'. Known kinds: {', '.join(kinds(task))}."
            )
        raise UnknownComponentError(unknown_message(kind, name, names))
    return import_target(entry) if isinstance(entry, str) else entry


# -- tasks and searches -------------------------------------------------------------------------------------


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: make a `raypipe.spec.task.Task` subclass available as `task: name` in specs."""

    def decorate(cls: T) -> T:
        from raypipe.spec.task import Task

        _refuse_builtin(name, builtins_of(TASK_GROUP), "task")
        if not (inspect.isclass(cls) and issubclass(cls, Task)):
            raise RegistryError(f"{cls!r} is not a subclass of raypipe.spec.task.Task")
        _TASKS[name] = cls
        return cls

    return decorate


def register_search(name: str) -> Callable[[T], T]:
    """Class decorator: make a search strategy available as `--search name`."""

    def decorate(cls: T) -> T:
        _refuse_builtin(name, builtins_of(SEARCH_GROUP), "search")
        _SEARCHES[name] = cls
        return cls

    return decorate


def _named_entries(builtins: dict[str, str], group: str, registered: dict[str, type], what: str) -> dict:
    plugins = _plugins(group)
    for name, target in plugins.items():
        _refuse_builtin(name, builtins, f"{what} plugin '{name}' = '{target}':")
    return {**builtins, **plugins, **registered}


def task_names() -> list[str]:
    return sorted(_named_entries(builtins_of(TASK_GROUP), TASK_GROUP, _TASKS, "task"))


def search_names() -> list[str]:
    return sorted(_named_entries(builtins_of(SEARCH_GROUP), SEARCH_GROUP, _SEARCHES, "search"))


def resolve_task(name: str) -> Task:
    """An instance of the task registered as `name`, or of the class a "package.module:Class" names."""
    if ":" in name:
        from raypipe.spec.task import Task

        cls = import_target(name)
        if not (inspect.isclass(cls) and issubclass(cls, Task)):
            raise UnknownComponentError(f"'{name}' is not a subclass of raypipe.spec.task.Task")
        return cls()
    entries = _named_entries(builtins_of(TASK_GROUP), TASK_GROUP, _TASKS, "task")
    if name not in entries:
        raise UnknownComponentError(unknown_message("task", name, list(entries)) + _not_installed())
    entry = entries[name]
    cls = import_target(entry) if isinstance(entry, str) else entry
    return cls()


def _not_installed() -> str:
    """A hint when raypipe runs from source without being installed: its built-ins are entry points."""
    if builtins_of(TASK_GROUP):
        return ""
    return (
        " raypipe's own tasks and searches are entry points of the installed package: install it "
        "(`bash scripts/install.sh`, or `pip install -e .` in the checkout)."
    )


def resolve_search(name: str) -> type:
    """The search strategy class registered as `name`."""
    entries = _named_entries(builtins_of(SEARCH_GROUP), SEARCH_GROUP, _SEARCHES, "search")
    if name not in entries:
        raise UnknownComponentError(unknown_message("search", name, list(entries)) + _not_installed())
    entry = entries[name]
    return import_target(entry) if isinstance(entry, str) else entry


# -- parameters ---------------------------------------------------------------------------------------------


def params_model(cls: type) -> type[BaseModel]:
    """A pydantic model (extra="forbid") built from the keyword parameters of `cls.__init__`."""
    fields: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except (NameError, TypeError):
        hints = {}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{cls.__name__}Params", __config__=config, **fields)


def effective_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a choice runs with, defaults included, as JSON-able values (for ids and cache keys)."""
    return params_model(cls).model_validate(params).model_dump(mode="json")
