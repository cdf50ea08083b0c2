"""The web console's files: the page refers to the gateway's own files only, no file names
an address outside it, the policy keeps the browser to the gateway, and nothing but the
console's files (and the one vendored library) is served."""
import re

import pytest

from gateway import webconsole
from lastmile.errors import NotFound

OWN_FILES = sorted(p for p in webconsole.CONSOLE.iterdir() if p.suffix in (".html", ".js", ".css", ".svg"))


def references(page):
    return re.findall(r'(?:src|href)="([^"]+)"', page)


def test_the_page_refers_only_to_the_consoles_files():
    page = (webconsole.CONSOLE / "index.html").read_text(encoding="utf-8")
    found = references(page)
    assert found and all(ref.startswith(webconsole.PATH + "/") for ref in found), found
    for ref in found:
        name = ref.removeprefix(webconsole.PATH + "/")
        assert name in webconsole.VENDORED or webconsole.asset(name).status_code == 200, ref


@pytest.mark.parametrize("path", OWN_FILES, ids=lambda p: p.name)
def test_no_file_names_an_address_outside_the_gateway(path):
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org/2000/svg", "")), path


def test_every_module_the_scripts_import_is_there():
    for path in OWN_FILES:
        for name in re.findall(r'from "\./([^"]+)"|import\("\./([^"]+)"\)', path.read_text(encoding="utf-8")):
            target = next(n for n in name if n)
            assert (webconsole.CONSOLE / target).is_file(), (path.name, target)


def test_the_policy_keeps_the_browser_to_the_gateway():
    response = webconsole.page()
    policy = response.headers["Content-Security-Policy"]
    assert response.mimetype == "text/html"
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    script = re.search(r"script-src ([^;]+)", policy).group(1)
    assert script.strip() == "'self'"  # no inline script, no eval


def test_the_consoles_files_are_served_with_their_types():
    assert webconsole.asset("app.js").mimetype == "text/javascript"
    assert webconsole.asset("style.css").mimetype == "text/css"
    assert all(str(path).startswith(str(webconsole.CONSOLE / "node_modules")) for path in webconsole.VENDORED.values())


@pytest.mark.parametrize("name", [
    "../service.py", "../../lastmile/config.py", "/etc/passwd", "index.html", "package.json", "package-lock.json",
    "node_modules/chart.js/dist/chart.js", "./node_modules/chart.js/dist/chart.umd.js", "vendor/other.js",
    "no-such-file.js", "", "app.js/..",
])
def test_nothing_else_is_served(name):
    with pytest.raises(NotFound):
        webconsole.asset(name)
