"""The README checks itself: every CLI command and option, and every plugin
configuration key, is documented there, or a test here fails.

Commands are read from the click group itself and keys from
``config.documented_keys()``, so a new option or key fails this file until the
README says what it does.
"""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from datasette_embeddings import config
from datasette_embeddings.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_YAML_BLOCK = re.compile(r"^```ya?ml\s*\n(.*?)^```", re.M | re.S)


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, text) pairs, a section's text running to the next heading of its level or higher,
    so its subsections are part of it; a ``#`` line inside a fenced block is a comment, not a heading."""
    headings: list[tuple[int, str, int]] = []  # level, title, line number
    lines = text.splitlines()
    in_code = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading:
            headings.append((len(heading.group(1)), heading.group(2), number))
    sections = []
    for i, (level, title, start) in enumerate(headings):
        end = next((n for lv, _, n in headings[i + 1:] if lv <= level), len(lines))
        sections.append((title, "\n".join(lines[start + 1:end])))
    return sections


def _walk(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command) for every command and group below ``group``, aliases included."""
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from _walk(command, path + (name,))


COMMANDS = list(_walk(cli))


def _names_of(command: click.Command) -> list[str]:
    """Every path under which the same command object is registered (e.g. an alias)."""
    return [" ".join(path) for path, other in COMMANDS if other is command]


def _long_options(command: click.Command) -> list[str]:
    return sorted({
        opt for param in command.params if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--") and opt != "--help"
    })


def _mentions(text: str, word: str) -> bool:
    """``word`` as a whole token: ``--k`` is not found in ``--keep``, ``map`` not in ``maps``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def sections() -> list[tuple[str, str]]:
    return _sections(README.read_text(encoding="utf-8"))


def _command_sections(sections, names: list[str]) -> list[str]:
    """Title and body of every section whose heading names the command (``datasette-embeddings NAME ...``).

    A group's sections are those of its subcommands; the top-level group's is "CLI reference".
    """
    found = []
    for title, body in sections:
        if not names and title == "CLI reference":
            found.append(title + "\n" + body)
        for name in names:
            if re.search(rf"`datasette-embeddings {re.escape(name)}(?=[\s`])", title):
                found.append(title + "\n" + body)
                break
    return found


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_is_documented(sections, path, command):
    names = _names_of(command)
    found = _command_sections(sections, names)
    assert found, f"README has no heading naming `datasette-embeddings {' '.join(path)}`"
    text = "\n".join(found)
    name = " ".join(path)
    # an alias (``neighbors`` for ``neighbours``) is named in the section, as a command, not as a word
    named = re.search(rf"(datasette-embeddings |`){re.escape(name)}(?=[\s`])", text)
    assert named, f"README's section for {names} does not name '{name}'"


@pytest.mark.parametrize(
    "path,command", [((), cli)] + COMMANDS, ids=["(cli)"] + [" ".join(p) for p, _ in COMMANDS]
)
def test_command_options_are_documented(sections, path, command):
    names = _names_of(command) if path else []
    text = "\n".join(_command_sections(sections, names))
    missing = [opt for opt in _long_options(command) if not _mentions(text, opt)]
    assert not missing, f"options of '{' '.join(path) or 'datasette-embeddings'}' missing from its README section: {missing}"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_has_help(path, command):
    assert command.help, f"'{' '.join(path)}' has no help text"


@pytest.fixture(scope="module")
def config_blocks() -> list[dict]:
    """The plugin's configuration from every yaml block of the README that configures it."""
    blocks = []
    for source in _YAML_BLOCK.findall(README.read_text(encoding="utf-8")):
        parsed = yaml.safe_load(source)
        plugin = ((parsed or {}).get("plugins") or {}).get("datasette-embeddings") if isinstance(parsed, dict) else None
        if isinstance(plugin, dict):
            blocks.append(plugin)
    return blocks


def test_readme_has_configuration_blocks(config_blocks):
    assert len(config_blocks) >= 2


@pytest.mark.parametrize("key", config.documented_keys())
def test_config_key_is_documented(config_blocks, key):
    """A key ``a.b`` is documented when some block nests ``b`` under ``a`` under the plugin's name."""
    *parents, last = key.split(".")
    for block in config_blocks:
        node = block
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            return
    pytest.fail(f"configuration key '{key}' is in no README yaml block under plugins: datasette-embeddings:")


def test_every_configuration_block_passes_validation(config_blocks):
    """A README yaml block that the plugin would refuse (a renamed key, a value out of range) fails here."""
    for block in config_blocks:
        config.PluginConfig.from_dict(block)
