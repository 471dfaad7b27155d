"""The evaluation app: `bincount eval ckpt_path=CKPT data.root=DIR [data.split=all]` and `python eval.py ...`
run this same Hydra app on the configs shipped as ``bincount.conf`` (the checkout's conf/)."""

import hydra
from omegaconf import DictConfig

from bincount.config import CONFIG_PATH
from bincount.entry import user_errors_exit


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from bincount.training import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
