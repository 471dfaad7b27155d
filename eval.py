"""Evaluate a checkpoint: `python eval.py ckpt_path=CKPT data.root=DIR data.split=all`."""

import hydra
from omegaconf import DictConfig

from bincount.entry import user_errors_exit
from bincount.training import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
