"""The in-process debugger: SageMaker Debugger's collections and rules without the service.

Records what smdebug's hook records (weights, biases, gradients and losses), as per-layer statistics,
into ``RUN/debugger/`` and evaluates the rules of ``bincount.monitor.rules`` while training: a rule that
fires logs a warning at once, and ``debugger/report.json`` plus ``debugger/report.png`` sum it up at the
end. ``bincount debug-report RUN`` redraws the plot from the records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from bincount.errors import BincountError
from bincount.layout import DEBUG_LOSSES, DEBUG_PLOT, DEBUG_REPORT, DEBUG_TENSORS
from bincount.monitor.rules import COLLECTIONS, Rule, build_rules, tensor_stats
from bincount.reports.debug_report import load_local, plot_debug

log = logging.getLogger(__name__)


def _before(row: dict, step: int) -> bool:
    """Was this record made before a checkpoint taken at ``step`` (training steps done)? Training records
    carry the step they were made at; a validation's losses the step count when it ran, which for the
    validation just before the checkpoint is ``step`` itself."""
    return row["step"] <= step if row.get("mode") == "eval" else row["step"] < step


class LocalDebugger(L.Callback):
    """Records weights, biases and gradients statistics every ``save_interval`` training steps and
    every loss, on the global-zero process; evaluates the rules as it goes."""

    def __init__(self, output_dir: str, save_interval: int, collections: Iterable[str], rules: dict[str, dict]):
        unknown = set(collections) - set(COLLECTIONS)
        if unknown:
            raise BincountError(f"callbacks.debugger.collections: unknown {sorted(unknown)}; known: {COLLECTIONS}")
        self.output_dir = Path(output_dir)
        self.save_interval = max(1, int(save_interval))
        self.collections = tuple(collections)
        self.rules = build_rules(rules)
        self.fired: dict[str, dict[str, Any]] = {}
        self.train_losses: list[float] = []
        self._since_eval: list[float] = []
        self._eval_losses: list[float] = []
        self._rows: list[str] = []
        self._loss_rows: list[str] = []
        self._active = False
        self._trainer: L.Trainer | None = None
        self._resumed: dict | None = None  # the state of the checkpoint a run resumes from
        self.records_from_step = 0  # > 0 when the records of an earlier part of a resumed run were not found

    # -- resuming: the rules' memory travels in checkpoints, the records stay in files --------------
    def state_dict(self) -> dict:
        return {
            "step": self._trainer.global_step if self._trainer is not None else 0,
            "records_dir": str(self.output_dir.resolve()),
            "records_from_step": self.records_from_step,
            "train_losses": list(self.train_losses),
            "since_eval": list(self._since_eval),
            "fired": {k: dict(v) for k, v in self.fired.items()},
            "rules": {r.name: r.state() for r in self.rules},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._resumed = dict(state_dict)
        self.train_losses = list(state_dict.get("train_losses", []))
        self._since_eval = list(state_dict.get("since_eval", []))
        self.fired = {k: dict(v) for k, v in state_dict.get("fired", {}).items()}
        self.records_from_step = int(state_dict.get("records_from_step", 0))
        states = state_dict.get("rules", {})
        for rule in self.rules:
            rule.load_state(states.get(rule.name, {}))

    def _start_records(self) -> None:
        """Empty record files for a new run. For a resumed one, the records up to the checkpoint (from
        this folder, or from the folder of the run's earlier part): what was recorded after the checkpoint
        is recorded again, so no step appears twice."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        resumed = self._resumed
        for name in (DEBUG_TENSORS, DEBUG_LOSSES):
            target = self.output_dir / name
            if resumed is None:
                target.write_text("")
                continue
            source = target if target.is_file() else Path(resumed["records_dir"]) / name
            if not source.is_file():
                self.records_from_step = int(resumed["step"])
                log.warning(
                    "debugger: the records before step %d (in %s) are not here; the report starts at that step",
                    self.records_from_step,
                    resumed["records_dir"],
                )
                target.write_text("")
                continue
            kept = [
                line
                for line in source.read_text().splitlines()
                if line.strip() and _before(json.loads(line), int(resumed["step"]))
            ]
            target.write_text("".join(line + "\n" for line in kept))

    # -- recording ----------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._active = stage == "fit" and trainer.is_global_zero
        self._trainer = trainer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:  # after Lightning restored this callback's state when resuming
            self._start_records()

    def _due(self, trainer: L.Trainer) -> bool:
        return self._active and trainer.global_step % self.save_interval == 0

    def _record(self, step: int, collection: str, named: list[tuple[str, torch.Tensor]]) -> None:
        if collection not in self.collections or not named:
            return
        stats = dict(zip((n for n, _ in named), tensor_stats([t for _, t in named])))
        for name, s in stats.items():
            self._rows.append(json.dumps({"step": step, "mode": "train", "collection": collection, "name": name, **s}))
        shapes = {n: tuple(t.shape) for n, t in named}
        for rule in self.rules:
            self._fire(rule, step, rule.check_tensors(step, collection, stats, shapes))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._due(trainer):
            params = list(pl_module.named_parameters())
            self._record(trainer.global_step, "weights", [(n, p) for n, p in params if not n.endswith("bias")])
            self._record(trainer.global_step, "biases", [(n, p) for n, p in params if n.endswith("bias")])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._due(trainer):
            grads = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
            self._record(trainer.global_step, "gradients", grads)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not self._active or loss is None:
            return
        value = float(loss)
        step = trainer.global_step - 1  # the step this batch just made
        self.train_losses.append(value)
        self._since_eval.append(value)
        self._log_loss("train", step, value)
        for rule in self.rules:
            self._fire(rule, step, rule.check_train_loss(step, self.train_losses))

    def _watching(self, trainer) -> bool:
        """Validation while fitting; not the sanity check, and not a later trainer.validate (calibration)."""
        return self._active and not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._watching(trainer) and isinstance(outputs, torch.Tensor):
            value = float(outputs)
            self._eval_losses.append(value)
            self._log_loss("eval", trainer.global_step, value)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._watching(trainer) or not self._eval_losses:
            return
        for rule in self.rules:
            self._fire(
                rule, trainer.global_step, rule.check_eval(trainer.global_step, self._since_eval, self._eval_losses)
            )
        self._since_eval, self._eval_losses = [], []
        self._flush()

    def _log_loss(self, mode: str, step: int, value: float) -> None:
        if "losses" in self.collections:
            self._loss_rows.append(json.dumps({"step": step, "mode": mode, "loss": value}))

    def _fire(self, rule: Rule, step: int, message: str | None) -> None:
        if message is None:
            return
        entry = self.fired.setdefault(rule.name, {"first_step": step, "times": 0, "message": message})
        entry["times"] += 1
        entry["last_step"], entry["last_message"] = step, message
        if entry["times"] == 1:
            log.warning("debugger: %s at step %d: %s", rule.name, step, message)

    def _flush(self) -> None:
        for name, rows in ((DEBUG_TENSORS, self._rows), (DEBUG_LOSSES, self._loss_rows)):
            if rows:
                with open(self.output_dir / name, "a") as f:
                    f.write("\n".join(rows) + "\n")
                rows.clear()

    # -- the report ---------------------------------------------------------------------------
    def report(self) -> dict:
        return {
            "save_interval": self.save_interval,
            "collections": list(self.collections),
            "train_steps": len(self.train_losses),
            "records_from_step": self.records_from_step,
            "rules": {
                r.name: {"triggered": r.name in self.fired, "params": r.params(), **self.fired.get(r.name, {})}
                for r in self.rules
            },
        }

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        self._flush()
        report = self.report()
        (self.output_dir / DEBUG_REPORT).write_text(json.dumps(report, indent=2))
        fired = [f"{n} (step {v['first_step']})" for n, v in report["rules"].items() if v["triggered"]]
        log.info(
            "debugger: %d of %d rules fired%s; report %s",
            len(fired),
            len(self.rules),
            f": {', '.join(fired)}" if fired else "",
            self.output_dir / DEBUG_REPORT,
        )
        plot_debug(load_local(self.output_dir), self.output_dir / DEBUG_PLOT)
