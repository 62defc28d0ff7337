"""PyInstaller entry point for the one-file etun binary: the CLI, nothing else."""

import sys

from etun.cli import main

if __name__ == "__main__":
    sys.exit(main())
