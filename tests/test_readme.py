"""The README and the pages under docs/ run as written: every command in them parses with the
real argument parser, every config, script and repository file they name exists, no page's
commands train into a run directory an earlier one filled, the README stays short, and the
fast commands on the course's conv net run end to end (on a small trained run standing in for
runs/mnist_conv)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from cnnkit.cli import build_parser
from cnnkit.config import config_path
from tests.conftest import ROOT

# the README, then the docs pages (a command on a page may use a file the README made)
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
         for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
README = "\n".join(PAGES.values())  # every page's text, in order
README_LINES = 320  # "at most about 300": what a newcomer reads to the end
VENV = ".venv/bin/"
REPO_DIRS = ("configs/", "scripts/", "docs/")  # paths there are the repository's own files
RUNS_E2E = ("runs/mnist_conv", "runs/mnist_dense")  # stood in for by the trained_run fixture
FAST = {"sample-images", "visualize", "predict", "eval", "plot", "summary", "config"}


def _blocks(kind: str, text: str = README) -> list[str]:
    """The text of each fenced block whose info string is `kind` ('' for none)."""
    return re.findall(rf"^```{kind}\n(.*?)^```", text, flags=re.S | re.M)


def _shell_lines(block: str) -> list[str]:
    """Commands of a block: continuations joined, comments dropped, `&&` chains split."""
    joined = block.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.extend(" ".join(map(shlex.quote, part)) for part in _split_and(words))
    return lines


def _split_and(words: list[str]) -> list[list[str]]:
    parts, current = [], []
    for word in words:
        if word == "&&":
            parts.append(current)
            current = []
        else:
            current.append(word)
    return [*parts, current]


BASH = [line for block in _blocks("bash") for line in _shell_lines(block)]
TRANSCRIPTS = [line[2:] for block in _blocks("") + _blocks("console")
               for line in block.splitlines() if line.startswith("$ ")]
# inline commands in the prose, not synopses (`cnnkit eval CHECKPOINT [--json]`) or mentions of
# a command and option (`cnnkit eval --json`): those with an argument to run on
def _runs_on_something(words: list[str]) -> bool:
    """An argument that is not an option or an option's value (`--trials 6`)."""
    return any(not w.startswith("-") and not (k and words[k - 1].startswith("--"))
               for k, w in enumerate(words))


INLINE = [span for span in re.findall(r"`(cnnkit [^`]+)`", README)
          if "..." not in span and "[" not in span and "|" not in span
          and _runs_on_something(shlex.split(span)[2:])]


def cnnkit_argv(line: str) -> list[str] | None:
    """The cnnkit arguments of a command line (`.venv/bin/cnnkit A`, `cnnkit A`, `python -m
    cnnkit A`, `torchrun ... -m cnnkit A`), or None where it runs something else."""
    words = shlex.split(line, comments=True)
    words = words[:words.index(">")] if ">" in words else words  # `> mine.yaml`: the shell's
    if not words:
        return None
    program = words[0].removeprefix(VENV)
    if program == "cnnkit":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1:][:1] == ["cnnkit"]:
        return words[words.index("-m") + 2:]
    return None


ALL = [*BASH, *TRANSCRIPTS, *INLINE]
# files a page's own earlier command writes (`cnnkit runs R --best-config > best.yaml`)
WRITTEN = {words[words.index(">") + 1] for line in ALL
           if ">" in (words := shlex.split(line, comments=True))[:-1]}
COMMANDS = [(line, argv) for line in ALL if (argv := cnnkit_argv(line)) is not None]


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 30 and len(BASH) > 30


@pytest.mark.parametrize("line", [line for block in _blocks("bash", PAGES["README.md"])
                                  for line in _shell_lines(block)])
def test_shell_blocks_run_without_an_activated_venv(line):
    """Copied into a shell after the Quick start, each README line finds its program (the
    docs pages are written for an installed cnnkit, `pip install` and all)."""
    assert line.startswith((VENV, "python3 -m venv ")), line


@pytest.mark.parametrize(("line", "argv"), COMMANDS, ids=[line for line, _ in COMMANDS])
def test_each_cnnkit_command_parses_and_names_files_that_exist(line, argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, f"{line}: does not parse"  # --help, --version
        return
    config = getattr(args, "config", None)
    if config and not _placeholder(config) and config not in WRITTEN:
        assert config_path(config).is_file(), f"{line}: no config {config}"
    named = [w for w in argv if w.startswith(REPO_DIRS) and w != getattr(args, "out", None)]
    for word in named:
        assert (ROOT / word).exists(), f"{line}: {word} does not exist"


def test_scripts_and_files_named_by_python_commands_exist():
    for line in ALL:
        words = shlex.split(line, comments=True)
        if words and words[0].removeprefix(VENV) in ("python", "python3") and \
                words[1:2] != ["-m"]:
            for word in words[1:]:
                if word.startswith(REPO_DIRS):
                    assert (ROOT / word).exists(), f"{line}: {word} does not exist"


@pytest.mark.parametrize("page", list(PAGES))
def test_no_shell_block_trains_into_a_run_an_earlier_one_filled(page):
    """A second `train` into the same run directory without --resume refuses ("already
    holds a run"): each page gives each its own."""
    parser, seen = build_parser(), {}
    for line in [line for block in _blocks("bash", PAGES[page]) for line in _shell_lines(block)]:
        argv = cnnkit_argv(line)
        if not argv or argv[0] != "train":
            continue
        args = parser.parse_args(argv)
        out = args.out or _default_out(args.config)
        if not args.resume:
            assert out not in seen, f"{line}: {out} already holds the run of: {seen[out]}"
            seen[out] = line


def test_the_readme_is_short_and_links_pages_that_exist():
    text = PAGES["README.md"]
    assert text.count("\n") <= README_LINES
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).is_file(), target
    for page, body in PAGES.items():
        for target in re.findall(r"\]\(([\w./-]+\.md)", body):
            assert (ROOT / page).parent.joinpath(target).resolve().is_file(), (page, target)


def _default_out(config: str) -> str:
    import yaml

    path = config_path(ROOT / config if config.startswith("configs/") else config)
    out = (yaml.safe_load(path.read_text()) or {}).get("out")
    return str(Path(out)) if out else f"runs/{path.stem}"


def _placeholder(word: str) -> bool:
    """CONFIG, DIR, PHOTOS/val/bees/IMAGE.jpg: a name the reader fills in."""
    return any(part.isupper() for part in re.split(r"[/.=]", word) if len(part) > 1)


def test_fast_commands_run_end_to_end(cli, trained_run, tmp_path, monkeypatch):
    """The commands on the course's conv net (sample images, pictures, predict, eval, plot)
    and the summaries, in README order, in a fresh folder where runs/mnist_conv and
    runs/mnist_dense are a small trained run."""
    _, result = trained_run
    for run in RUNS_E2E:
        shutil.copytree(result.out_dir, tmp_path / run)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    ran = []
    for line in BASH:
        argv = cnnkit_argv(line)
        if not argv or argv[0] not in FAST or any(_placeholder(w) for w in argv):
            continue
        runs = [w for w in argv if w.startswith("runs/") and w != _out_of(argv)]
        if not all(w.startswith(RUNS_E2E) for w in runs):
            continue  # another run (localization, resnet18): parsed above, not trained here
        code, out, err = cli(*argv)
        assert code == 0, f"{line}: {err}"
        ran.append(argv[0])
    assert {"sample-images", "visualize", "predict", "eval", "plot"} <= set(ran)


def _out_of(argv: list[str]) -> str | None:
    return argv[argv.index("--out") + 1] if "--out" in argv else None
