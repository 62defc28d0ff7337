"""The soak's short version (3 minutes; `make soak` runs 30): no corrupted or duplicated data, memory and fds flat, counters that add up."""

import json
import os
from pathlib import Path

import pytest

from tests import REPO
from tests.e2e.soak import Soak, verdict

pytestmark = pytest.mark.usefixtures("e2e_ready")


def test_three_minutes_of_traffic_under_loss_blackouts_and_restarts_keep_every_promise(tmp_path):
    result = Soak(3, tmp_path / "soak").run()
    out = REPO / "build" / "soak" / "ci.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"soak summary: {out}")
    assert result["transfers"]["ok"] >= 10, result["transfers"]
    assert result["restarts"] == {"a": 2, "b": 2}
    assert verdict(result) == [], verdict(result)
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith(f"sk{os.getpid() % 10000}-")] \
        if Path("/run/netns").is_dir() else True
