"""The web console (gateway/console/): one page of plain HTML, CSS and JavaScript
modules that calls only this gateway's /api/v1 routes, served with a policy that
keeps the browser to the gateway. Its one library, Chart.js, comes from the npm
registry at the version gateway/console/package-lock.json pins (``make`` runs
``npm ci`` there)."""
import os
from pathlib import Path

from werkzeug.security import safe_join
from werkzeug.wrappers import Response

from lastmile.errors import NotFound

CONSOLE = Path(__file__).parent / "console"
PATH = "/console"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Served names of files installed from the npm registry, and where npm puts them.
VENDORED = {"vendor/chart.umd.js": CONSOLE / "node_modules" / "chart.js" / "dist" / "chart.umd.js"}
# Scripts and styles only from the gateway's files (no inline script, no eval); canvases
# draw from data: images; fetch() only to the gateway; downloads are blob: URLs.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def page():
    content = (CONSOLE / "index.html").read_bytes()
    return Response(content, mimetype="text/html", headers={
        "Content-Security-Policy": POLICY, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def asset(filename):
    """A file of the console, joined safely under its folder, or a vendored library."""
    suffix = os.path.splitext(filename)[1]
    path = VENDORED.get(filename)
    if path is None:
        joined = safe_join(str(CONSOLE), filename)
        parts = Path(joined).relative_to(CONSOLE).parts if joined else ()
        # npm's whole tree stays private: only the files named in VENDORED leave it.
        if parts and parts[0] != "node_modules":
            path = Path(joined)
    if path is None or suffix not in TYPES or not path.is_file():
        raise NotFound(f"No file {filename} in the console")
    return Response(path.read_bytes(), mimetype=TYPES[suffix], headers={
        "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
