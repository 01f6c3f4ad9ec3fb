"""Runs the code of docs/quickstart.md in order, as a reader would from a checkout's root: each
```bash block line by line in a shell, each ```python block as a script; ```text blocks are
what the code before them printed. Used by test_quickstart.py; run directly, it prints what
each block prints (to paste into the page).

    python tests/quickstart_runner.py /tmp/somewhere
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from typing import List, Tuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "quickstart.md"


def blocks(text: str) -> List[Tuple[str, str]]:
    """[(language, code)] of the fenced blocks, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def run(cwd: pathlib.Path) -> List[Tuple[str, str, str]]:
    """[(language, code, what it printed on stdout)] for each bash and python block, run in
    `cwd` with the checkout's examples/ linked there."""
    link = cwd / "examples"
    if not link.exists():
        link.symlink_to(ROOT / "examples")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT / "examples" / "quickstart") + os.pathsep + env.get("PYTHONPATH", "")
    out = []
    for lang, code in blocks(PAGE.read_text()):
        if lang == "bash":
            printed = ""
            for line in code.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                done = subprocess.run(line, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                                      timeout=600)
                if done.returncode != 0:
                    raise RuntimeError(f"{line!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
                printed += done.stdout
        elif lang == "python":
            done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"python block failed:\n{code}\n{done.stderr[-3000:]}")
            printed = done.stdout
        else:
            continue
        out.append((lang, code, printed))
    return out


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    folder.mkdir(parents=True, exist_ok=True)
    for lang, code, printed in run(folder):
        print(f"===== {lang}\n{code}----- printed\n{printed}")
