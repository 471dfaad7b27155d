"""Every callback of bincount, in one package. Lightning callbacks (conf/callbacks/*.yaml):
``history`` (per-epoch metrics and curves), ``debugger`` (the in-process debugger), ``smdebug_hook``
(SageMaker Debugger's hook inside a job), ``system_monitor`` (utilization and step timing),
``objective_log`` (the metric line SageMaker's tuner reads), ``ema`` (an average of the weights, for recipes), ``time_budget`` (the epochs that fit a wall-clock budget). Hydra callbacks (conf/hydra/default.yaml):
``sweep_end`` (the sweep summary, one W&B run per trial)."""
