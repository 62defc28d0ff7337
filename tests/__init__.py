"""etun's tests, one tier per folder by what they need (unit, datapath, e2e, packaging, fuzz); REPO is the repository."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
