"""Every `pinfeed ...` command the docs and the config comments name exists, with every option
they give it: a renamed or dropped option fails here instead of on a reader's terminal. Every
test the docs cite as backing a claim exists too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from pinfeed_cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = (
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "serving").glob("*.yaml")),
    *sorted((REPO / "configs").glob("*.yaml")),
    REPO / "ray_cluster.yaml",
    REPO / "Makefile",
)
# `pinfeed` followed by words, up to the end of a code span, a comment or the line
MENTION = re.compile(r"(?<![\w/.-])pinfeed((?: +[^\s`#;|)\]]+)+)")


def mentions(path: Path) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for match in MENTION.finditer(line.replace("[", " ").replace("]", " ")):
            yield number, match.group(1).split()


def resolve(root: Any, words: list[str]) -> tuple[Any, list[str]] | None:
    """The (sub)command `words` start with and the words after it; None when the first word
    is no command (prose such as "pinfeed is ..."). Commands are Typer's (its own click)."""
    command, rest = root, words
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    return None if command is root else (command, rest)


def option_names(command: Any) -> set[str]:
    names = {"--help"}
    for parameter in command.params:
        names.update(getattr(parameter, "opts", []))
        names.update(getattr(parameter, "secondary_opts", []))
    return names


def test_every_documented_pinfeed_option_exists() -> None:
    root = typer.main.get_command(app)
    checked, wrong = 0, []
    for path in DOCS:
        for line, words in mentions(path):
            found = resolve(root, words)
            if found is None:
                continue
            command, rest = found
            known = option_names(command)
            for word in rest:
                flag = word.split("=", 1)[0].rstrip(",.:")
                if flag.startswith("--") and len(flag) > 2:
                    checked += 1
                    if flag not in known:
                        wrong.append(f"{path.relative_to(REPO)}:{line}: {command.name} {flag}")
    assert checked > 20, f"only {checked} documented options found: the scan is broken"
    assert not wrong, "documented options that do not exist:\n" + "\n".join(wrong)


def test_the_scan_finds_a_wrong_option(tmp_path: Path) -> None:
    """The checker itself: an option that does not exist is caught."""
    doc = tmp_path / "doc.md"
    doc.write_text("run `pinfeed serve --redis-url redis://x` then `pinfeed features status`\n")
    root = typer.main.get_command(app)
    [(_, words), (_, status)] = list(mentions(doc))
    command, rest = resolve(root, words)
    assert command.name == "serve" and "--redis-url" not in option_names(command)
    assert "--port" in option_names(command) and rest[0] == "--redis-url"
    assert resolve(root, status)[0].name == "status"


# `test_x.py::test_name`, or `::test_name` after one (the same file)
CITED_TEST = re.compile(r"`(test_\w+\.py)?::(test_\w+)")


def test_every_test_the_docs_cite_exists() -> None:
    """The docs back their claims by naming tests (`file.py::test_name`): a renamed or
    removed test must fail here, not leave a claim pointing at nothing."""
    defined = {
        (path.name, name)
        for path in (REPO / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    cited, missing = 0, []
    for doc in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))):
        file = None
        for match in CITED_TEST.finditer(doc.read_text()):
            file = match.group(1) or file
            cited += 1
            if (file, match.group(2)) not in defined:
                missing.append(f"{doc.name}: {file}::{match.group(2)}")
    assert not missing, missing
    assert cited >= 50, cited  # the docs name their tests; a regex that matched nothing fails
