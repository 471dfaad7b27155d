"""The `bincount` command: every command is defined where COMMANDS says, --help loads no torch, one
syntax for count lists, and command-line defaults read from their one source (the configs, or the
library function's signature)."""

import argparse
import importlib
import subprocess
import sys

import pytest

from bincount.cli import COMMANDS, HYDRA_APPS, build_parser, main
from bincount.cli.common import counts, default
from bincount.config import compose


def test_each_command_is_defined_by_the_module_it_is_mapped_to():
    for name, (module, _) in COMMANDS.items():
        if name in HYDRA_APPS:
            assert callable(importlib.import_module(module).main)
            continue
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert name in sub.choices, f"{module}.register does not define `{name}`"


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from bincount.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'the command list must not import torch'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in COMMANDS:
        assert name in r.stdout


def test_one_syntax_for_count_lists():
    assert counts("1..5") == counts("1,2,3,4,5") == counts("[1,2,3,4,5]") == [1, 2, 3, 4, 5]
    assert counts("0..0") == [0] and counts("3") == [3]
    for bad in ("", "a..b", "1-5", "[", "-1,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a list of counts"):
            counts(bad)
    # every command that takes counts parses them with this one function
    for command in ("scan", "download", "prepare"):
        parser = build_parser(command)
        action = next(
            a for a in parser._subparsers._group_actions[0].choices[command]._actions if "--classes" in a.option_strings
        )
        assert action.type is counts, command


def test_defaults_come_from_the_configs_and_the_library(monkeypatch):
    from bincount.data import download, prepare, s3

    cfg = compose("train", ["paths.root_dir=."])
    args = build_parser("prepare").parse_args(["prepare", "SRC", "OUT"])
    assert (args.size, args.split, args.ratios, args.seed) == (
        cfg.data.image_size,
        cfg.data.split,
        list(cfg.data.ratios),
        cfg.seed,
    )
    assert args.quality == default(prepare.prepare, "quality") and args.format == default(prepare.prepare, "fmt")
    args = build_parser("download").parse_args(["download"])
    assert args.dest == cfg.paths.data_dir == "./data/abid"  # the folder a first training run downloads into
    assert args.workers == default(download.download, "workers") and args.attempts == default(s3.s3_client, "attempts")
    # a different default in the config is what the command shows
    cfg_seed = compose("train", ["seed=7"]).seed
    monkeypatch.setattr("bincount.config.compose", lambda name, overrides=None: compose(name, [*overrides, "seed=7"]))
    assert build_parser("prepare").parse_args(["prepare", "SRC", "OUT"]).seed == cfg_seed == 7


def test_default_needs_a_default():
    def f(a, b=3):
        return a + b

    assert default(f, "b") == 3
    with pytest.raises(TypeError, match="no default for a"):
        default(f, "a")


def test_scan_reports_counts_and_skips(synthetic_abid, capsys):
    (synthetic_abid / "bin-images" / "99999.jpg").write_bytes(b"not an image")
    (synthetic_abid / "metadata" / "99999.json").write_text('{"EXPECTED_QUANTITY": 2}')
    try:
        assert main(["scan", str(synthetic_abid), "--classes", "[1,2,3]"]) == 0
    finally:
        (synthetic_abid / "bin-images" / "99999.jpg").unlink()
        (synthetic_abid / "metadata" / "99999.json").unlink()
    out = capsys.readouterr().out
    assert '"images": 36' in out and '"count not in classes": 24' in out and '"unreadable image' in out


def test_scan_on_real_abid(abid, capsys):
    assert main(["scan", str(abid / "raw"), "--classes", "1..5", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert '"count not in classes": 372' in out and '"images": 627' in out


def test_a_missing_extra_is_named_in_one_line(counter_ckpt, tmp_path, monkeypatch, capsys):
    """`setup.sh core` installs no extra: `bincount export --onnx` without onnx says which extra to install
    (torch's own error wraps Python's ModuleNotFoundError; None in sys.modules is how Python marks a module
    that cannot be imported)."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(counter_ckpt), "--out", str(tmp_path / "model"), "--onnx"]) == 2
    assert "pip install 'bincount[onnx]'" in capsys.readouterr().err


def test_missing_extras_are_explained_and_other_missing_modules_are_not(monkeypatch):
    from lightning_utilities.core.imports import RequirementCache

    from bincount.errors import explain

    # Lightning's WandbLogger without wandb raises ModuleNotFoundError(str(RequirementCache(...)))
    lightning_style = ModuleNotFoundError(str(RequirementCache("wandb>=999")))
    assert "pip install 'bincount[wandb]'" in explain(lightning_style)
    monkeypatch.setitem(sys.modules, "sagemaker", None)  # as if not installed
    with pytest.raises(ImportError) as missing:
        importlib.import_module("sagemaker.no_such_module")  # never imported, also where other tests import sagemaker
    wrapped = RuntimeError("the launcher failed")
    wrapped.__cause__ = missing.value
    assert "pip install 'bincount[sagemaker]'" in explain(wrapped)
    with pytest.raises(ImportError) as other:
        importlib.import_module("no_such_package_anywhere")
    assert explain(other.value) is None  # not an extra of bincount: a genuine bug keeps its traceback
