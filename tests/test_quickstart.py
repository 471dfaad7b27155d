"""The CPU recipe end to end on all of dev-224, as the README's main command runs it (slow: ~11.5 min)."""

import json
import subprocess
import sys

import pytest

from bincount.paths import PROJECT_ROOT


@pytest.mark.slow
def test_quickstart_recipe_learns(dev224, tmp_path):
    r = subprocess.run(
        [sys.executable, "train.py", "experiment=quickstart", f"data.root={dev224}", f"hydra.run.dir={tmp_path}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test/images"] == m["data"]["images"]["test"] > 500
    # better than always answering the most frequent count
    assert m["test/acc"] > m["test/majority_rate"]
    # a normal run raises no debugger alarm (the rules are tuned not to cry wolf)
    rules = json.loads((tmp_path / "debugger" / "report.json").read_text())["rules"]
    assert [name for name, rule in rules.items() if rule["triggered"]] == []
    assert [line for line in (r.stderr + r.stdout).splitlines() if "WARNING" in line and "debugger:" in line] == []
