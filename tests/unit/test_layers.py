"""The layers contract (pyproject's import-linter section) holds, and it covers every package of
the product, so a new top-level package cannot slip outside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("pinfeed", "pinfeed_cli", "feature_repo", "training", "evaluation", "serving")


def test_lint_imports_keeps_every_contract() -> None:
    binary = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert binary, "import-linter is not installed in this environment (make test installs it)"
    done = subprocess.run(
        [binary, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 broken" in done.stdout


def test_the_layers_name_every_product_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = config["contracts"][0]["layers"]
    top_down = ("pinfeed_cli", "serving", "evaluation", "training", "feature_repo", "pinfeed")
    assert tuple(layers) == top_down
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(PRODUCT)
