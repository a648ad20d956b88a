"""`python -m statecli`."""

from statecli.cli import main

main()
