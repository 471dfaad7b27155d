"""The training app: `bincount train KEY=VALUE ...` and `python train.py KEY=VALUE ...` run this same Hydra
app on the configs shipped as ``bincount.conf`` (the checkout's conf/). A launcher from config decides
where ``train(cfg)`` runs (``launcher=local``: here; ``launcher=sagemaker``: a SageMaker job).

This file is also run as a script: Lightning starts the other processes of a multi-GPU run by running
the main script again, and `bincount train` (like the SageMaker job's entry) makes it this file."""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from bincount.config import CONFIG_PATH, check_config
from bincount.entry import user_errors_exit


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)  # here too, so a SageMaker job is not submitted with a bad value
    return instantiate(cfg.launcher).launch(cfg)


if __name__ == "__main__":
    main()
