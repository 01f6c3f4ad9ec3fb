"""The `ncfast` command: score feature dumps, rank models, write and merge statistics.

    ncfast score                         # a built-in example, no files needed
    ncfast score feats.npy labels.npy --json scores.json
    ncfast rank resnet=r.npy vit=v.npy --labels labels.npy
    ncfast stats feats.npy labels.npy -o stats.safetensors
    ncfast merge a.safetensors b.safetensors -o all.safetensors
    ncfast metrics                       # what each score means, which way is better
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .._version import __version__
from . import files, glossary, rank, score
from .common import CommandError, stop_distributed
from .output import silence_stdout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ncfast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ncfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (score, rank, files, glossary):
        command.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except BrokenPipeError:  # `ncfast --help | head -1`
        silence_stdout()
        return 0
    try:
        return _run(args)
    finally:
        stop_distributed()


def _run(args) -> int:
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader of stdout has gone (`| head -1`): not an error of the command
        silence_stdout()
        return 0
    except (CommandError, ValueError, TypeError, FileNotFoundError, MemoryError, ImportError) as err:
        message = str(err).replace("pass nan_policy='skip'", "pass --nan-policy skip")  # the CLI's name for it
        print(f"ncfast: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"ncfast: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncfast: interrupted", file=sys.stderr)
        return 130
