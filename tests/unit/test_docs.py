"""The README is the operator's first page: it must name every variable the code reads,
and keep the two commands that set everything up."""
from pathlib import Path

from lastmile.config import VARIABLES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_configuration_variable_with_its_default():
    for name, (default, _) in VARIABLES.items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is missing from the README's configuration table"
        if default:
            assert f"`{default}`" in row, f"{name}'s default {default!r} is not in its README row"


def test_readme_gives_the_two_commands():
    assert "make run" in README and "make test" in README
