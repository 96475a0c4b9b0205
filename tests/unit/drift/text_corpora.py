"""Real English text found on this machine, for the text-drift tests (no downloads, no generated text).

* :func:`docstrings`: the first paragraph of every module, class and function docstring of the Python
  standard library's top-level modules (read with ``ast``, nothing imported), one line each;
* :func:`licenses`: the paragraphs of the licence texts in ``/usr/share/common-licenses`` (Debian's
  ``base-files``, an essential package), one line each.

Both are deduplicated and sorted, so a seeded :func:`sample` draws the same texts on every run of one
machine. Two sources make a drifted pair (docstrings vs licences); random halves of one source make an
undrifted pair.
"""

from __future__ import annotations

import ast
import functools
import random
import sysconfig
from pathlib import Path

LICENSES = Path("/usr/share/common-licenses")
MIN_CHARS = 40


def _one_line(text: str) -> str:
    return " ".join(text.split())


@functools.cache
def docstrings() -> tuple[str, ...]:
    """First docstring paragraphs (at least 40 characters) of the stdlib's top-level modules."""
    found: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    para = _one_line(doc.split("\n\n")[0])
                    if len(para) >= MIN_CHARS:
                        found.add(para)
    return tuple(sorted(found))


@functools.cache
def licenses() -> tuple[str, ...]:
    """Paragraphs (at least 40 characters) of every licence text in /usr/share/common-licenses."""
    found: set[str] = set()
    for path in sorted(LICENSES.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        for para in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            para = _one_line(para)
            if len(para) >= MIN_CHARS:
                found.add(para)
    return tuple(sorted(found))


def sample(texts: tuple[str, ...], n: int, seed: int) -> list[str]:
    """``n`` distinct texts drawn with ``random.Random(seed)``."""
    if n > len(texts):
        raise ValueError(f"asked for {n} texts, only {len(texts)} found")
    return random.Random(seed).sample(list(texts), n)


def halves(texts: tuple[str, ...], n_ref: int, n_cur: int, seed: int) -> tuple[list[str], list[str]]:
    """Two disjoint random samples of one source (an undrifted pair)."""
    drawn = sample(texts, n_ref + n_cur, seed)
    return drawn[:n_ref], drawn[n_ref:]
