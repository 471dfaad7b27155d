"""Train a bin counter: `python train.py experiment=resnet50 [launcher=sagemaker] [-m ...]`."""

import hydra
from omegaconf import DictConfig

from bincount.config import check_config
from bincount.entry import user_errors_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)  # here too, so a SageMaker job is not submitted with a bad value
    launcher = hydra.utils.instantiate(cfg.launcher)
    return launcher.launch(cfg)


if __name__ == "__main__":
    main()
