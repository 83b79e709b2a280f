"""The JavaScript and CSS a report embeds, taken from installed Python packages (never a CDN).

Vega, Vega-Lite and vega-embed come from vl-convert's bundle (the one Altair inlines); DataTables (table
sorting and filtering) from the copy itables ships. Building Vega's bundle takes about 2 s, so it is kept
in the user's cache directory, keyed by the vl-convert version.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import cache
from importlib import metadata
from pathlib import Path

from raypipe.errors import RaypipeError

INSTALL = "pip install -r requirements.txt (or bash scripts/install.sh)"
_EXPORT = re.compile(r"export\s*\{([^}]*)\}\s*;?")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raypipe" / "report-assets"


def _safe(script: str) -> str:
    """A script as the body of an inline <script> element (which ends at the first '</script')."""
    return script.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


@cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one classic script defining window.vegaEmbed."""
    try:
        path = _cache_dir() / f"vega-{metadata.version('vl-convert-python')}.js"
    except metadata.PackageNotFoundError as exc:
        raise RaypipeError(f"the HTML report needs vl-convert-python: {INSTALL}") from exc
    if path.exists():
        return path.read_text()
    import vl_convert

    script = _safe(vl_convert.javascript_bundle())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(script)
    tmp.replace(path)
    return script


@cache
def datatables_bundle() -> tuple[str, str]:
    """(script, css) of DataTables with jQuery: the ES module itables ships, its exports put on
    window.raypipeDataTables so a plain inline module script can define them."""
    spec = importlib.util.find_spec("itables")  # not imported: itables itself would import pandas
    if spec is None or not spec.submodule_search_locations:
        raise RaypipeError(f"the HTML report needs itables (it ships DataTables): {INSTALL}")
    html = Path(spec.submodule_search_locations[0]) / "html"
    source = (html / "dt_bundle.js").read_text()
    # The module's own export list is its last one (only license comments follow it).
    found = next(reversed(list(_EXPORT.finditer(source))), None)
    if found is None:
        raise RaypipeError("itables' dt_bundle.js has no export list any more: pin itables==2.9.*")
    pairs = [part.strip().split(" as ") for part in found.group(1).split(",")]
    names = ",".join(f"{alias.strip()}:{local.strip()}" for local, alias in pairs)
    script = source[: found.start()] + f"window.raypipeDataTables={{{names}}};" + source[found.end() :]
    return _safe(script), (html / "dt_bundle.css").read_text()
