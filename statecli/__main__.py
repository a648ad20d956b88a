"""`python -m statecli`."""

from statecli.cli import main

if __name__ == "__main__":  # not when a spawned worker process (batch --jobs) imports this module again
    main()
