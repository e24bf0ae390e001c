"""``python -m jobctl``: the command line (how the web console starts its runs)."""

from jobctl.cli import main

main()
