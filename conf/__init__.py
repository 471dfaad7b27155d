"""bincount's Hydra configs. This folder is shipped inside the package as ``bincount.conf`` (setup.py),
which is how `bincount train`, `bincount eval`, `bincount deploy` and train.py/eval.py find it
(``pkg://bincount.conf``); Hydra needs this file to import it."""
