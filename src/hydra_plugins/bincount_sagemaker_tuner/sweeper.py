"""Hydra finds sweepers only under the ``hydra_plugins`` namespace: this shim makes bincount's SageMaker
tuner one (conf/hydra/sweeper/search_on_sagemaker.yaml). The work is in bincount.launch.sagemaker_tuner."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class SageMakerTunerSweeper(Sweeper):
    def __init__(self, **settings: Any):
        self.settings = settings
        self.config = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        from bincount.launch.sagemaker_tuner import tune

        return tune(self.config, arguments, **self.settings)
