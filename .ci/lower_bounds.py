"""Print a pip constraints file that pins every dependency of pyproject.toml to its lower bound.

``python3 .ci/lower_bounds.py [EXTRA ...] > lowest.txt`` turns each ``name>=X`` of
``[project].dependencies`` (and of the named optional extras) into ``name==X``, so that
``pip install -c lowest.txt -e ".[dev]"`` installs the oldest releases the project claims to support.
A requirement with an environment marker keeps its marker; one without a ``>=`` bound is refused.
"""
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

LOWER = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)\s*(?:,[^;]*)?(;.*)?$")


def lower_bounds(pyproject: Path, extras: list) -> list:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        match = LOWER.match(requirement)
        if match is None:
            raise SystemExit(f"{requirement!r} in {pyproject} has no '>=' lower bound to test; give it one")
        name, version, marker = match.groups()
        pins.append(f"{name}=={version}{(' ' + marker.strip()) if marker else ''}")
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print("\n".join(lower_bounds(root / "pyproject.toml", sys.argv[1:])))
