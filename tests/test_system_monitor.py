"""The system monitor on real work: a CPU burner and a memory allocation are seen by the sampler, and a
real training run writes utilization and step timing that `bincount cost-report` turns into a report."""

import json
import math
import multiprocessing as mp
import time

import psutil
import pytest
from hydra.utils import instantiate

from bincount.cli import main as cli
from bincount.monitor.system import RESOURCES, Sampler, read_csv
from bincount.training import train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice
from helpers.burn import burn


def test_sampler_sees_a_cpu_burning_child_and_allocated_memory(tmp_path):
    sampler = Sampler(tmp_path, interval_s=0.25)
    sampler.start()
    time.sleep(0.6)
    baseline_rss = max(r["proc_rss_gb"] for r in sampler.rows)
    child = mp.get_context("spawn").Process(target=burn, args=(2.5,))
    child.start()
    # 600 MiB, touched so it is resident: twice the 0.3 GB asserted below, as an allocator may reuse pages earlier
    # tests freed but kept resident (with 400 MiB a full suite once saw the RSS rise by only 0.296 GB)
    ballast = bytearray(600 * 1024**2)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    child.join()
    time.sleep(0.6)
    sampler.stop()
    rows = sampler.rows
    assert len(rows) >= 8
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    # the burner is a child of this process: counted as this run's CPU (about one core; the machine is shared)
    assert max(r["proc_cpu_cores"] for r in rows) > 0.3
    assert max(r["proc_rss_gb"] for r in rows) - baseline_rss > 0.3
    assert all(0 <= r["cpu_percent"] <= 100 and 0 < r["mem_percent"] < 100 for r in rows)
    assert all(0 < r["disk_percent"] <= 100 for r in rows)
    del ballast


@pytest.mark.parametrize("name", ["simple", "advanced", "pytorch"])
def test_every_profiler_config_builds_lightnings_profiler(name, tmp_path):
    cfg = compose_cfg("train", [f"profiler={name}"], tmp_path)
    profiler = instantiate(cfg.profiler)
    assert type(profiler).__name__.lower().startswith(name)
    assert str(profiler.dirpath) == str(tmp_path / "profiler")


@pytest.fixture(scope="module")
def monitored_run(dev224, tmp_path_factory):
    """A real 2-epoch run on 50 images with the default callbacks (system monitor on) and the simple profiler."""
    root = make_abid_slice(dev224, tmp_path_factory.mktemp("abid"), ids_by_count(dev224, 10))
    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(
        "train", TINY + [f"data.root={root}", "trainer.max_epochs=2", "data.batch_size=8", "profiler=simple"], out
    )
    train(cfg)
    return out


def test_run_writes_utilization_and_step_timing(monitored_run):
    rows = read_csv(monitored_run / "utilization.csv")
    info = json.loads((monitored_run / "utilization.json").read_text())
    assert rows and set(RESOURCES) <= set(rows[0])
    assert {"train", "test"} <= {r["phase"] for r in rows}
    assert info["machine"]["cpus"] == psutil.cpu_count() and info["machine"]["gpus"] == []
    assert info["summary"]["proc_rss_gb"]["peak"] > 0.1
    assert "gpu_percent" not in info["summary"]  # no GPU here: absent, not zero
    timing = info["timing"]
    train_images = json.loads((monitored_run / "metrics.json").read_text())["data"]["images"]["train"]
    assert [e["epoch"] for e in timing["epochs"]] == [0, 1]
    for e in timing["epochs"]:
        assert e["steps"] == math.ceil(train_images / 8)
        assert e["data_s"] + e["compute_s"] + e["val_s"] <= e["total_s"] + 1e-3
        assert e["compute_s"] > 0 and e["val_s"] > 0
    assert timing["test_s"] > 0 and 0 <= timing["data_share"] <= 1
    profile = (monitored_run / "profiler" / "fit-profile.txt").read_text()
    assert "run_training_epoch" in profile


def test_cost_report_on_a_real_run(monitored_run, capsys):
    assert cli(["cost-report", str(monitored_run), "--instance-type", "ml.p3.2xlarge"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((monitored_run / "cost_report.json").read_text())
    md = (monitored_run / "cost_report.md").read_text()
    assert md in printed and "Recommended:" in md
    for png in ("utilization.png", "time_per_epoch.png"):
        assert (monitored_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec, need = report["recommended"], report["needs"]
    assert not need["uses_gpu"] and rec["gpus"] == 0
    fitting = [c for c in report["instances"] if c["fits"]]
    assert rec["instance"] == min(fitting, key=lambda c: c["usd_per_hour"])["instance"]
    assert rec["usd_per_run"] == pytest.approx(rec["usd_per_hour"] * report["seconds"] / 3600, abs=1e-5)
    assert rec["vcpus"] >= need["vcpus"] >= need["cores_used"] * need["headroom"]
    assert rec["mem_gb"] >= need["mem_gb"]
    assert all(c["short_of"] for c in report["instances"] if not c["fits"])
    assert report["seconds"] == json.loads((monitored_run / "metrics.json").read_text())["seconds"]
    assert report["saving_per_run_usd"] > 0  # a V100 instance for a CPU-sized run
    assert len(report["timing"]["epochs"]) == 2 and "waiting for data" in md
    assert (report["machine"]["cpu_model"] or "") in md.split("Machine:")[1].splitlines()[0]  # named on Linux
