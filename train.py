"""Train a bin counter: `python train.py experiment=resnet50 [launcher=sagemaker] [-m ...]`.

The same Hydra app as `bincount train` (bincount.cli.train), on the configs in conf/."""

from bincount.cli.train import main

if __name__ == "__main__":
    main()
