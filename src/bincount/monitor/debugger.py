"""The in-process debugger: SageMaker Debugger's collections and rules without the service.

Records what smdebug's hook records (weights, biases, gradients and losses), as per-layer statistics,
into ``RUN/debugger/`` and evaluates the same kind of rules while training (vanishing and exploding
gradients, loss not decreasing, overfitting, poor weight initialization): a rule that fires logs a
warning at once, and ``debugger/report.json`` plus ``debugger/report.png`` sum it up at the end.
``bincount debug-report RUN`` redraws the plot from the records.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable

import lightning as L
import torch

log = logging.getLogger(__name__)

COLLECTIONS = ("weights", "biases", "gradients", "losses")
TENSORS_NAME = "tensors.jsonl"
LOSSES_NAME = "losses.jsonl"
REPORT_NAME = "report.json"
STATS = ("mean", "std", "min", "max", "norm", "abs_mean", "nonfinite")


def tensor_stats(tensors: list[torch.Tensor]) -> list[dict[str, float]]:
    """mean, std, min, max, L2 norm, mean |x| and the number of NaN/Inf values of each tensor, in one
    transfer to the CPU."""
    rows = []
    for t in tensors:
        t = t.detach().float()
        finite = torch.isfinite(t)
        rows.append(torch.stack([t.mean(), t.std() if t.numel() > 1 else t.new_zeros(()), t.min(), t.max(),
                                 t.norm(), t.abs().mean(), (~finite).sum().float()]))
    values = torch.stack(rows).cpu().tolist() if rows else []
    return [dict(zip(STATS, v)) for v in values]


# -- rules ------------------------------------------------------------------------------------
class Rule:
    """A check on the records; ``check_*`` return a message when the rule fires."""

    name = "rule"

    def check_tensors(self, step: int, collection: str, stats: dict[str, dict], shapes: dict) -> str | None:
        return None

    def check_train_loss(self, step: int, losses: list[float]) -> str | None:
        return None

    def check_eval(self, step: int, train_losses: list[float], eval_losses: list[float]) -> str | None:
        return None

    def params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def state(self) -> dict:
        """What the rule has seen so far (its private fields), for checkpoints."""
        return {k: v for k, v in vars(self).items() if k.startswith("_")}

    def load_state(self, state: dict) -> None:
        vars(self).update({k: v for k, v in state.items() if k in self.state()})


class VanishingGradient(Rule):
    """As smdebug's vanishing_gradient: the mean |gradient| of a layer falls below ``threshold``."""

    name = "vanishing_gradient"

    # start_step 1: at step 0 a zero-initialised residual branch (timm's ResNets zero the last norm
    # layer of each block) legitimately has zero gradients.
    def __init__(self, threshold: float = 1e-7, start_step: int = 1):
        self.threshold, self.start_step = threshold, start_step

    def check_tensors(self, step, collection, stats, shapes):
        if collection != "gradients" or step < self.start_step:
            return None
        low = [n for n, s in stats.items() if s["abs_mean"] < self.threshold]
        if low:
            return (f"{len(low)} of {len(stats)} layers have mean |gradient| < {self.threshold:g} "
                    f"(e.g. {', '.join(low[:3])})")
        return None


class ExplodingGradient(Rule):
    """As smdebug's exploding_tensor, on gradients: NaN/Inf values, or a value beyond ``threshold``."""

    name = "exploding_gradient"

    def __init__(self, threshold: float = 1e3):
        self.threshold = threshold

    def check_tensors(self, step, collection, stats, shapes):
        if collection != "gradients":
            return None
        bad = [n for n, s in stats.items()
               if s["nonfinite"] > 0 or max(abs(s["min"]), abs(s["max"])) > self.threshold]
        if bad:
            return f"{len(bad)} layers have NaN/Inf gradients or |gradient| > {self.threshold:g} (e.g. {', '.join(bad[:3])})"
        return None


class LossNotDecreasing(Rule):
    """As smdebug's loss_not_decreasing: the mean training loss of the last ``num_steps`` steps is not
    at least ``diff_percent`` % below that of the ``num_steps`` before."""

    name = "loss_not_decreasing"

    def __init__(self, num_steps: int = 10, diff_percent: float = 0.1):
        self.num_steps, self.diff_percent = num_steps, diff_percent

    def check_train_loss(self, step, losses):
        n = self.num_steps
        if len(losses) < 2 * n or len(losses) % n:
            return None
        before, now = sum(losses[-2 * n:-n]) / n, sum(losses[-n:]) / n
        if before - now < abs(before) * self.diff_percent / 100:
            return f"mean loss of the last {n} steps {now:.4f} vs {before:.4f} the {n} before"
        return None


class Overfit(Rule):
    """As smdebug's overfit: validation loss above training loss by more than ``ratio_threshold``
    (relative), at ``patience`` validations in a row."""

    name = "overfit"

    def __init__(self, ratio_threshold: float = 0.1, patience: int = 2):
        self.ratio_threshold, self.patience = ratio_threshold, patience
        self._streak = 0

    def check_eval(self, step, train_losses, eval_losses):
        if not train_losses or not eval_losses:
            return None
        train, val = sum(train_losses) / len(train_losses), sum(eval_losses) / len(eval_losses)
        ratio = (val - train) / max(abs(train), 1e-12)
        self._streak = self._streak + 1 if ratio > self.ratio_threshold else 0
        if self._streak >= self.patience:
            return f"validation loss {val:.4f} is {ratio:.0%} above training loss {train:.4f} ({self._streak} validations in a row)"
        return None


class PoorWeightInitialization(Rule):
    """At the first recorded step: a layer whose weights are all equal (symmetry is never broken), or
    whose spread is more than ``threshold`` times off the He-initialization scale sqrt(2 / fan_in)
    (activations then vanish or blow up through the depth)."""

    name = "poor_weight_initialization"

    def __init__(self, threshold: float = 10.0):
        self.threshold = threshold
        self._checked = False

    def check_tensors(self, step, collection, stats, shapes):
        if collection != "weights" or self._checked:
            return None
        self._checked = True
        bad = []
        for name, s in stats.items():
            shape = shapes[name]
            if len(shape) < 2:  # norm layers' scales start at 1 by design
                continue
            expected = math.sqrt(2 / max(1, math.prod(shape[1:])))
            if s["std"] == 0 or not 1 / self.threshold <= s["std"] / expected <= self.threshold:
                bad.append(f"{name} (std {s['std']:.3g}, He scale {expected:.3g})")
        if bad:
            return f"{len(bad)} layers start far from a sound initialization: {'; '.join(bad[:3])}"
        return None


RULES = {r.name: r for r in (VanishingGradient, ExplodingGradient, LossNotDecreasing, Overfit,
                             PoorWeightInitialization)}


def build_rules(config: dict[str, dict | None] | None) -> list[Rule]:
    """``{rule_name: {param: value} | None}`` -> rule objects (None: the rule's defaults)."""
    rules = []
    for name, params in (config if config is not None else {n: None for n in RULES}).items():
        if name not in RULES:
            from bincount.errors import BincountError
            raise BincountError(f"callbacks.debugger.rules: no rule {name!r}; known: {', '.join(RULES)}")
        rules.append(RULES[name](**(params or {})))
    return rules


# -- the callback -----------------------------------------------------------------------------
def _before(row: dict, step: int) -> bool:
    """Was this record made before a checkpoint taken at ``step`` (training steps done)? Training records
    carry the step they were made at; a validation's losses the step count when it ran, which for the
    validation just before the checkpoint is ``step`` itself."""
    return row["step"] <= step if row.get("mode") == "eval" else row["step"] < step


class LocalDebugger(L.Callback):
    """Records weights, biases and gradients statistics every ``save_interval`` training steps and
    every loss, on the global-zero process; evaluates the rules as it goes."""

    def __init__(self, output_dir: str, save_interval: int = 20, collections: Iterable[str] = COLLECTIONS,
                 rules: dict[str, dict | None] | None = None):
        unknown = set(collections) - set(COLLECTIONS)
        if unknown:
            from bincount.errors import BincountError
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
        return {"step": self._trainer.global_step if self._trainer is not None else 0,
                "records_dir": str(self.output_dir.resolve()), "records_from_step": self.records_from_step,
                "train_losses": list(self.train_losses), "since_eval": list(self._since_eval),
                "fired": {k: dict(v) for k, v in self.fired.items()},
                "rules": {r.name: r.state() for r in self.rules}}

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
        for name in (TENSORS_NAME, LOSSES_NAME):
            target = self.output_dir / name
            if resumed is None:
                target.write_text("")
                continue
            source = target if target.is_file() else Path(resumed["records_dir"]) / name
            if not source.is_file():
                self.records_from_step = int(resumed["step"])
                log.warning("debugger: the records before step %d (in %s) are not here; the report starts at "
                            "that step", self.records_from_step, resumed["records_dir"])
                target.write_text("")
                continue
            kept = [line for line in source.read_text().splitlines() if line.strip() and _before(json.loads(line),
                                                                                               int(resumed["step"]))]
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

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._active and not trainer.sanity_checking and isinstance(outputs, torch.Tensor):
            value = float(outputs)
            self._eval_losses.append(value)
            self._log_loss("eval", trainer.global_step, value)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active or trainer.sanity_checking or not self._eval_losses:
            return
        for rule in self.rules:
            self._fire(rule, trainer.global_step, rule.check_eval(trainer.global_step, self._since_eval, self._eval_losses))
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
        for name, rows in ((TENSORS_NAME, self._rows), (LOSSES_NAME, self._loss_rows)):
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
            "rules": {r.name: {"triggered": r.name in self.fired, "params": r.params(), **self.fired.get(r.name, {})}
                      for r in self.rules},
        }

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        self._flush()
        report = self.report()
        (self.output_dir / REPORT_NAME).write_text(json.dumps(report, indent=2))
        fired = [f"{n} (step {v['first_step']})" for n, v in report["rules"].items() if v["triggered"]]
        log.info("debugger: %d of %d rules fired%s; report %s", len(fired), len(self.rules),
                 f": {', '.join(fired)}" if fired else "", self.output_dir / REPORT_NAME)
        from bincount.reports.debug_report import PNG_NAME, load_local, plot_debug
        plot_debug(load_local(self.output_dir), self.output_dir / PNG_NAME)
