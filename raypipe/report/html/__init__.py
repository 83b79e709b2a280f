"""report.html: one self-contained page per run (and per monitor check), its scripts, styles and images
embedded, so it opens from a file, an e-mail or an S3 download with no network request."""

from __future__ import annotations

import json
import os
from typing import Any

from raypipe.engine.rundir import RunDir

REPORT = "report.html"
HISTORY_REPORT = "history.html"


def _json(value: Any) -> str:
    """JSON safe inside an inline <script> element."""
    text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render(template: str, script: str | None = None, **values: Any) -> str:
    """A page from the package's Jinja2 templates, with the vendored Vega and DataTables inlined, and its
    behaviour from `script` (default: the template's own, run.js for run.html.j2)."""
    from importlib import resources

    import jinja2

    from raypipe.report.html.assets import datatables_bundle, vega_bundle

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("raypipe.report.html", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = lambda value: jinja2.utils.markupsafe.Markup(_json(value))
    files = resources.files("raypipe.report.html") / "templates"
    dt_script, dt_css = datatables_bundle()
    assets = {
        "vega": vega_bundle(),
        "datatables": dt_script,
        "datatables_css": dt_css,
        "style": (files / "report.css").read_text(),
        "script": (files / (script or f"{template.split('.')[0]}.js")).read_text(),
    }
    return env.get_template(template).render(assets=assets, **values)


def write_run_report(
    run_dir: str | os.PathLike[str] | RunDir, out: str | None = None, dataset: str | None = None
) -> str:
    """Write the run's report.html (or `out`); returns where. `dataset` overrides where the run's data is
    read for images and truth (a run whose data moved)."""
    from raypipe.report.html.run_page import context
    from raypipe.report.reading import RunView

    view = RunView(run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir))
    store, name = _target(view.run_dir, REPORT, out)
    return _write(store, name, render("run.html.j2", **context(view, dataset)))


def write_check_report(check_dir: str | os.PathLike[str] | RunDir) -> str:
    """Write CHECK_DIR/report.html from a monitor check's files (report.json, features.parquet and the
    profile's reference features where they can still be read); returns where."""
    from raypipe.report.html.check_page import context

    store = check_dir if isinstance(check_dir, RunDir) else RunDir(check_dir)
    store.write_bytes(REPORT, render("check.html.j2", **context(store)).encode())
    return store.path(REPORT)


def write_history_report(reference: str, history: Any, objective: str, out: str | None = None) -> str:
    """Write a monitoring reference's history.html (or `out`) from its history.parquet rows (a Polars
    DataFrame, one row per checked batch); returns where. Each check's own report is linked."""
    from raypipe.report.html.history_page import context

    store, name = _target(RunDir(reference), HISTORY_REPORT, out)
    page_dir = store.root if store.is_local else None  # links to local checks are relative to the page
    return _write(
        store, name, render("history.html.j2", "check.js", **context(history, objective, reference, page_dir))
    )


def _target(default: RunDir, name: str, out: str | None) -> tuple[RunDir, str]:
    """Where a page goes: `out` (a path or URI) when given, else `name` in `default`."""
    return (RunDir(os.path.dirname(out) or "."), os.path.basename(out)) if out else (default, name)


def _write(store: RunDir, name: str, html: str) -> str:
    store.fs.create_dir(store.root, recursive=True)
    store.write_bytes(name, html.encode())
    return store.path(name)
