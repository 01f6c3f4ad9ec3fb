"""``python -m ncfast``: a built-in pass through ClassStats and a summary (ncfast.cli.demo)."""

from .cli.demo import main

main()
