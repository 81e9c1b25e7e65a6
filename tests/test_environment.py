"""environment.yml and pyproject.toml must list the same dependencies, with the same ranges."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
ENVIRONMENT = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ


def pip_requirements() -> dict[str, SpecifierSet]:
    """[project] dependencies plus the test extra, by their conda-forge names."""
    listed = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"]
    requirements = [Requirement(line) for line in listed]
    return {CONDA_NAMES.get(canonicalize_name(r.name), canonicalize_name(r.name)): r.specifier for r in requirements}


def conda_packages() -> dict[str, str]:
    """Every conda package in environment.yml, name -> version spec as written."""
    packages = {}
    for entry in ENVIRONMENT["dependencies"]:
        if isinstance(entry, str):  # the other entry is the {"pip": [...]} section
            name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", entry).groups()
            packages[canonicalize_name(name)] = spec
    return packages


def test_only_conda_forge():
    # the pytorch channel is deprecated; mixing channels makes solves slow and fragile
    assert ENVIRONMENT["channels"] == ["conda-forge"]


def test_python_is_pinned_within_requires_python():
    version = conda_packages()["python"]
    assert re.fullmatch(r"=3\.\d+", version), f"pin one minor version, e.g. python=3.11, not {version!r}"
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(version[1:])


def test_same_dependencies_and_ranges():
    wanted = pip_requirements()
    conda = {name: spec for name, spec in conda_packages().items() if name not in ("python", "pip")}
    assert sorted(conda) == sorted(wanted), (
        f"only in pyproject.toml: {sorted(set(wanted) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(wanted))}"
    )
    differ = {name: (str(wanted[name]), conda[name]) for name in wanted if SpecifierSet(conda[name]) != wanted[name]}
    assert not differ, f"version ranges differ (pyproject, environment.yml): {differ}"


def test_pip_installs_this_package_editable_with_tests():
    pip_sections = [entry["pip"] for entry in ENVIRONMENT["dependencies"] if isinstance(entry, dict)]
    assert pip_sections == [["-e .[test]"]]
