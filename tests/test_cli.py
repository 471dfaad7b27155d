import argparse
import importlib
import subprocess
import sys

from bincount.cli import COMMANDS


def test_each_command_is_defined_by_the_module_it_is_mapped_to():
    for name, (module, _) in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert name in sub.choices, f"{module}.register does not define `{name}`"


def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from bincount.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'the command list must not import torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in COMMANDS:
        assert name in r.stdout


def test_scan_reports_counts_and_skips(abid, capsys):
    from bincount.cli import main

    assert main(["scan", str(abid / "raw"), "--classes", "1,2,3,4,5", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert '"count not in classes": 372' in out and '"images": 627' in out
