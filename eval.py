"""Evaluate a checkpoint: `python eval.py ckpt_path=CKPT data.root=DIR data.split=all`.

The same Hydra app as `bincount eval` (bincount.cli.eval), on the configs in conf/."""

from bincount.cli.eval import main

if __name__ == "__main__":
    main()
