"""The registry: built-ins, decorator registration, import paths, entry-point plugins, helpful errors."""

from __future__ import annotations

import pytest

from raypipe.errors import UnknownComponentError
from raypipe.spec import registry
from raypipe.spec.validation import parse_spec
from tests.plugin_stages import EchoOCR, Invert

IDCARD = registry.resolve_task("idcard")  # its image and OCR stage kinds resolve with the task


def test_builtin_names_resolve_lazily():
    assert "clahe" in registry.available("enhance", IDCARD)
    assert registry.resolve("channel", "gray", IDCARD).__name__ == "Gray"


def test_unknown_name_suggests_and_lists():
    with pytest.raises(
        UnknownComponentError,
        match=r"Unknown channel 'grey'\. Did you mean 'gray', 'green'\? "
        r"Available: blue, gray, green, original, red\.",
    ):
        registry.resolve("channel", "grey", IDCARD)
    with pytest.raises(UnknownComponentError, match=r"Unknown stage kind 'colour'"):
        registry.resolve("colour", "gray")


def test_register_decorator(monkeypatch):
    monkeypatch.setattr(registry, "_STAGES", {})
    registry.register("enhance", "invert")(Invert)
    assert registry.resolve("enhance", "invert", IDCARD) is Invert
    assert Invert.registered_as == ("enhance", "invert")


def test_a_name_a_builtin_holds_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_STAGES", {})
    with pytest.raises(registry.RegistryError, match=r"enhance stage 'clahe' is a built-in"):
        registry.register("enhance", "clahe")(Invert)
    with pytest.raises(registry.RegistryError, match=r"task 'idcard' is a built-in"):
        registry.register_task("idcard")(object)
    with pytest.raises(registry.RegistryError, match=r"is not a subclass of raypipe\.spec\.task\.Task"):
        registry.register_task("mine")(Invert)


def test_a_plugin_that_takes_a_builtin_name_is_refused(tmp_path, monkeypatch):
    dist = tmp_path / "bad_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[raypipe.stages]\nenhance.clahe = tests.plugin_stages:Invert\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()
    try:
        with pytest.raises(registry.RegistryError, match=r"enhance plugin 'enhance\.clahe' .* is a built-in"):
            registry.resolve("enhance", "clahe", IDCARD)
    finally:
        monkeypatch.undo()
        registry._entry_points.cache_clear()
    assert registry.resolve("enhance", "clahe", IDCARD).__name__ == "Clahe"


def test_built_in_tasks_and_searches_are_raypipes_own_entry_points():
    """Built-ins are published the way a plugin is (pyproject.toml), and a plugin is anyone else's."""
    assert registry.builtins_of(registry.TASK_GROUP) == {
        "idcard": "raypipe.tasks.idcard.task:IdCardTask",
        "digits": "raypipe.tasks.digits.task:DigitsTask",
    }
    assert set(registry.builtins_of(registry.SEARCH_GROUP)) == {"exhaustive", "racing"}
    assert registry.resolve_task("digits").name == "digits"
    assert registry.resolve_search("racing").name == "racing"


def test_task_stage_kinds_resolve_only_with_their_task():
    idcard = registry.resolve_task("idcard")
    assert registry.resolve("extract", "layout", idcard).__name__ == "Layout"
    with pytest.raises(UnknownComponentError, match=r"Unknown stage kind 'extract'"):
        registry.resolve("extract", "layout")
    with pytest.raises(UnknownComponentError, match=r"Unknown stage kind 'ocr'"):
        registry.resolve("ocr", "tesseract")  # idcard's OCR stages are idcard's, not the engine's
    digits = registry.resolve_task("digits")
    assert registry.kinds(digits) == sorted({*digits.stages, *registry.STAGE_BUILTINS})
    assert "ocr" not in registry.kinds(digits)


def test_import_path_errors_name_the_target():
    assert registry.resolve("ocr", "tests.plugin_stages:EchoOCR", IDCARD) is EchoOCR
    with pytest.raises(UnknownComponentError, match=r"module 'tests\.plugin_stages' has no 'Nope'"):
        registry.resolve("ocr", "tests.plugin_stages:Nope", IDCARD)
    with pytest.raises(UnknownComponentError, match=r"cannot import 'no_such_module'"):
        registry.resolve("ocr", "no_such_module:X", IDCARD)


def test_entry_point_plugin(tmp_path, monkeypatch):
    dist = tmp_path / "user_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[raypipe.stages]\nenhance.invert = tests.plugin_stages:Invert\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()
    try:
        assert "invert" in registry.available("enhance", IDCARD)
        assert registry.resolve("enhance", "invert", IDCARD) is Invert
    finally:
        monkeypatch.undo()
        registry._entry_points.cache_clear()
    assert "invert" not in registry.available("enhance", IDCARD)


def test_params_model_comes_from_the_signature():
    model = registry.params_model(Invert)
    assert model.model_validate({"strength": "2.5"}).strength == 2.5
    with pytest.raises(Exception, match=r"strength\n.*valid number"):
        model.model_validate({"strength": "strong"})


def test_user_stage_in_a_spec_is_validated_by_its_signature():
    raw = {
        "name": "toy",
        "task": "idcard",
        "stages": [
            {
                "name": "enhance",
                "choices": [{"name": "tests.plugin_stages:Invert", "params": {"strength": "x"}}],
            },
            {"name": "ocr", "choices": ["tests.plugin_stages:EchoOCR"]},
        ],
        "dataset": {"source": "x.parquet"},
        "sla": {"p95_latency_ms": 10},
    }
    with pytest.raises(Exception, match=r"stages\[0\]\.choices\[0\]\.params\.strength"):
        parse_spec(raw)
