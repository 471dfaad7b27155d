"""Shared fixtures: the real ABID development data, small ABID-layout folders built from it, a synthetic
ABID folder for tests that need no real images, and Hydra configs composed exactly as train.py / eval.py
compose them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from bincount.config import CONFIG_PACKAGE, config_file
from bincount.paths import PROJECT_ROOT, shared_abid
from helpers.synthetic_abid import make_synthetic_abid

CONF_DIR = config_file()  # the configs as the apps load them (bincount.conf: the checkout's conf/)
os.environ.setdefault("BINCOUNT_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def abid() -> Path:
    root = shared_abid()
    if not (root / "dev-224" / "metadata").is_dir():
        pytest.skip(f"ABID development data not found at {root} (set BINCOUNT_ABID)")
    return root


@pytest.fixture(scope="session")
def dev224(abid) -> Path:
    return abid / "dev-224"


def ids_by_count(root: Path, per_count: int, counts=(1, 2, 3, 4, 5)) -> list[str]:
    """The first ``per_count`` ids (sorted) of each count in a real ABID folder."""
    chosen: dict[int, list[str]] = {c: [] for c in counts}
    for mf in sorted((root / "metadata").glob("*.json")):
        c = json.loads(mf.read_text()).get("EXPECTED_QUANTITY")
        if c in chosen and len(chosen[c]) < per_count:
            chosen[c].append(mf.stem)
        if all(len(v) >= per_count for v in chosen.values()):
            break
    return [i for c in counts for i in chosen[c]]


def make_abid_slice(src: Path, dst: Path, ids: list[str]) -> Path:
    """An ABID-layout folder in a temp dir holding these ids of a real one (symlinked images)."""
    (dst / "bin-images").mkdir(parents=True, exist_ok=True)
    (dst / "metadata").mkdir(parents=True, exist_ok=True)
    for i in ids:
        (dst / "bin-images" / f"{i}.jpg").symlink_to(src / "bin-images" / f"{i}.jpg")
        shutil.copy(src / "metadata" / f"{i}.json", dst / "metadata" / f"{i}.json")
    return dst


@pytest.fixture(scope="session")
def synthetic_abid(tmp_path_factory) -> Path:
    """12 synthetic bins per count 1-5 (tests/helpers/synthetic_abid.py): no ../shared needed."""
    return make_synthetic_abid(tmp_path_factory.mktemp("abid-synthetic"))


@pytest.fixture(scope="session")
def small_abid(dev224, tmp_path_factory) -> Path:
    """40 real images per count 1-5 from dev-224."""
    return make_abid_slice(dev224, tmp_path_factory.mktemp("abid-small"), ids_by_count(dev224, 40))


@pytest.fixture(scope="session")
def dev_and_over5(dev224, abid, tmp_path_factory) -> tuple[Path, Path]:
    """8 real bins of each count 1-5 from dev-224 and 6 of each of counts 6, 7, 9 and 15 from over5-224."""
    over5 = abid / "over5-224"
    if not (over5 / "metadata").is_dir():
        pytest.skip(f"over5-224 not found in {abid}")
    base = tmp_path_factory.mktemp("dev-and-over5")
    dev = make_abid_slice(dev224, base / "dev", ids_by_count(dev224, 8))
    big = make_abid_slice(over5, base / "over5", ids_by_count(over5, 6, counts=(6, 7, 9, 15)))
    return dev, big


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path):
    """Compose a config as the entry points do, with the run directory set to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_PACKAGE, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(PROJECT_ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


# A model small enough to train in seconds on a 2-core CPU: the debug preset users have too (conf/debug/tiny.yaml).
TINY = ["debug=tiny"]


@pytest.fixture(scope="session")
def aws_server():
    """A real AWS API server (moto) on 127.0.0.1 with a free port, serving S3, SageMaker and the rest;
    yields its endpoint URL. Credentials and region are fake and set for the whole session."""
    from moto.server import ThreadedMotoServer

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def aws(aws_server):
    """The loopback AWS server, emptied before each test."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{aws_server}/moto-api/reset", method="POST")).read()
    return aws_server


@pytest.fixture(scope="session")
def counter_ckpt(small_abid, tmp_path_factory) -> Path:
    """A real Lightning checkpoint of a tiny counter (resnet10t, 32 px, 2 epochs on ``small_abid``), with
    the run's split_manifest.csv beside it as train.py writes it. Built without Hydra for speed."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from bincount.data.datamodule import BinDataModule
    from bincount.model.counter import CountingModel
    from helpers.trainers import quiet_trainer

    run = tmp_path_factory.mktemp("counter-run")
    L.seed_everything(0, workers=True)
    dm = BinDataModule(str(small_abid), image_size=32, batch_size=32, num_workers=0, output_dir=str(run))
    model = CountingModel(backbone="resnet10t", image_size=32)
    ckpt = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val/acc", mode="max")
    quiet_trainer(2, [ckpt], checkpoints=True).fit(model, datamodule=dm)
    return run / "checkpoints" / "best.ckpt"


def seed_public_bucket(endpoint: str, src: Path, ids: list[str], bucket: str = "aft-vbi-pds") -> str:
    """A public bucket on the loopback server holding these ids of a real ABID folder in the bucket's
    own key layout (bin-images/<id>.jpg, metadata/<id>.json), readable without credentials."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    # moto checks anonymous HEAD as s3:HeadObject; AWS checks it as s3:GetObject
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject", "s3:HeadObject", "s3:ListBucket"],
                        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                    }
                ],
            }
        ),
    )
    keys = [k for i in ids for k in (f"bin-images/{i}.jpg", f"metadata/{i}.json")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=(src / k).read_bytes()), keys))
    return bucket
