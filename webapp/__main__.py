"""`python -m webapp` is the same as the `udplab` command."""

from webapp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
