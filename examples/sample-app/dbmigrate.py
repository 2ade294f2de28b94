"""Alembic's command line, as `python -m dbmigrate upgrade head` with the venv's python.

`python -m alembic` needs alembic 1.5+ (its __main__), which Debian 11's 1.4.3 predates.
"""
import sys

from alembic.config import main

if __name__ == "__main__":
    sys.exit(main(prog="alembic"))
