"""The in-process debugger's rules, as SageMaker Debugger's built-in ones but evaluated in the training
process (vanishing and exploding gradients, loss not decreasing, overfitting, poor weight
initialization), and the per-tensor statistics they read. The callback that records the statistics
and runs the rules is ``bincount.callbacks.debugger.LocalDebugger``.
"""

from __future__ import annotations

import math

import torch

from bincount.errors import BincountError

COLLECTIONS = ("weights", "biases", "gradients", "losses")
STATS = ("mean", "std", "min", "max", "norm", "abs_mean", "nonfinite")


def tensor_stats(tensors: list[torch.Tensor]) -> list[dict[str, float]]:
    """mean, std, min, max, L2 norm, mean |x| and the number of NaN/Inf values of each tensor, in one
    transfer to the CPU."""
    rows = []
    for t in tensors:
        t = t.detach().float()
        finite = torch.isfinite(t)
        rows.append(
            torch.stack(
                [
                    t.mean(),
                    t.std() if t.numel() > 1 else t.new_zeros(()),
                    t.min(),
                    t.max(),
                    t.norm(),
                    t.abs().mean(),
                    (~finite).sum().float(),
                ]
            )
        )
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
    """Most of the network stops learning: at least ``min_share`` of the layers have a mean |gradient|
    below ``threshold``, at ``patience`` gradient records in a row, from ``start_step`` on.

    smdebug's rule fires on any single layer. A healthy network has a few idle layers (a residual
    branch whose zero-initialised last norm layer stays small keeps its convolutions' gradients near
    zero), and a warning about those teaches people to ignore the rule; a dead network (dead ReLUs,
    zeroed or saturated weights) has nearly all of them."""

    name = "vanishing_gradient"

    # start_step 1: at step 0 a zero-initialised residual branch (timm's ResNets zero the last norm
    # layer of each block) legitimately has zero gradients.
    def __init__(self, threshold: float, min_share: float, patience: int, start_step: int):
        self.threshold, self.min_share, self.patience, self.start_step = threshold, min_share, patience, start_step
        self._streak = 0

    def check_tensors(self, step, collection, stats, shapes):
        if collection != "gradients" or step < self.start_step or not stats:
            return None
        low = [n for n, s in stats.items() if s["abs_mean"] < self.threshold]
        self._streak = self._streak + 1 if len(low) >= self.min_share * len(stats) else 0
        if self._streak >= self.patience:
            return (
                f"{len(low)} of {len(stats)} layers have mean |gradient| < {self.threshold:g} "
                f"({self._streak} records in a row; e.g. {', '.join(low[:3])})"
            )
        return None


class ExplodingGradient(Rule):
    """As smdebug's exploding_tensor, on gradients: NaN/Inf values, or a value beyond ``threshold``."""

    name = "exploding_gradient"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def check_tensors(self, step, collection, stats, shapes):
        if collection != "gradients":
            return None
        bad = [n for n, s in stats.items() if s["nonfinite"] > 0 or max(abs(s["min"]), abs(s["max"])) > self.threshold]
        if bad:
            return f"{len(bad)} layers have NaN/Inf gradients or |gradient| > {self.threshold:g} (e.g. {', '.join(bad[:3])})"
        return None


class LossNotDecreasing(Rule):
    """Training stalls or diverges: the training loss, averaged over windows of ``num_steps`` steps, has
    not come ``diff_percent`` % below its best earlier window for ``patience`` windows in a row (or is
    NaN/Inf).

    smdebug's rule compares two successive windows of 10 steps, which mini-batch noise alone makes
    fire in healthy runs (the quick-start recipe tripped it at step 69 on a 0.3 % wiggle); windows of
    50 steps average that noise out, and a stall must last ``patience`` windows."""

    name = "loss_not_decreasing"

    def __init__(self, num_steps: int, diff_percent: float, patience: int):
        self.num_steps, self.diff_percent, self.patience = num_steps, diff_percent, patience

    def check_train_loss(self, step, losses):
        n = self.num_steps
        if len(losses) % n:
            return None
        windows = [sum(losses[i : i + n]) / n for i in range(0, len(losses), n)]
        if not math.isfinite(windows[-1]):
            return f"the mean loss of the last {n} steps is {windows[-1]}"
        if len(windows) <= self.patience:
            return None
        best = min(windows[: -self.patience])
        recent = min(windows[-self.patience :])
        if recent > best - abs(best) * self.diff_percent / 100:
            return (
                f"the mean loss of the last {self.patience} windows of {n} steps is no lower than before: "
                f"{recent:.4f} at best, against {best:.4f} earlier"
            )
        return None


class Overfit(Rule):
    """As smdebug's overfit: validation loss above training loss by more than ``ratio_threshold``
    (relative), at ``patience`` validations in a row, from ``start_step`` on."""

    name = "overfit"

    # start_step: where validation measures other weights than training (an average of them, which lags the
    # network early in a run), the comparison means something only once the average has caught up
    def __init__(self, ratio_threshold: float, patience: int, start_step: int = 0):
        self.ratio_threshold, self.patience, self.start_step = ratio_threshold, patience, start_step
        self._streak = 0

    def check_eval(self, step, train_losses, eval_losses):
        if not train_losses or not eval_losses or step < self.start_step:
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

    def __init__(self, threshold: float):
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


RULES = {
    r.name: r for r in (VanishingGradient, ExplodingGradient, LossNotDecreasing, Overfit, PoorWeightInitialization)
}


def build_rules(config: dict[str, dict]) -> list[Rule]:
    """``{rule_name: {param: value}}`` (conf/callbacks/debugger.yaml, where every parameter is set and
    explained) -> rule objects."""
    rules = []
    for name, params in config.items():
        if name not in RULES:
            raise BincountError(f"callbacks.debugger.rules: no rule {name!r}; known: {', '.join(RULES)}")
        try:
            rules.append(RULES[name](**(params or {})))
        except TypeError as e:
            raise BincountError(f"callbacks.debugger.rules.{name}: {e}") from None
    return rules
