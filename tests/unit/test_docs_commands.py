"""Every `pinfeed ...` command the docs and the config comments name exists, with every option
they give it: a renamed or dropped option fails here instead of on a reader's terminal."""

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
