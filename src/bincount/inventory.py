"""Reconcile predicted counts with the inventory's expected quantities: which bins must a person check?

Each bin gets one decision:

- ``match``: the model is confident and agrees with the expected quantity (auto-verified);
- ``mismatch``: the model is confident and disagrees (auto-flagged: the record or the bin is wrong;
  ``predicted_count`` is the proposed correction, or ``predicted_at_least`` = K + 1 when the photo
  says "more than K": never an exact count the model cannot make);
- ``needs-audit``: a person counts the bin: the model's confidence is below the threshold, or the bin
  holds too many items to count (below), or its record is outside the model's counts;
- ``not-decided``: the inputs do not allow a decision (the bin's expected quantity is not a
  non-negative integer or its records disagree, or its photos were given different counts): a person
  checks it, ``problem`` says why, and `bincount reconcile` exits 1.

Inputs are checked before any decision (``read_expected``, ``unique_predictions``): no bin is decided
twice, and every input row that cannot be used is named in the outputs.

The threshold is given, or chosen on validation predictions as the smallest confidence at which the
model's counts are right at least ``target_precision`` of the time. Where true counts are known
(predictions of an ABID folder), the summary measures how often the automatic decisions were right.

With a record error rate (``--record-error-rate``, from past audits) the record is evidence too: a bin
is auto-verified when the probability that its record is right, given the photo, reaches a threshold
chosen on validation predictions (``record_probability``), over the model's classes (a record of 12
is the class "more than 5" of a model that has it).

What the model cannot count is never decided as if it could:

- a record outside the model's classes (a 1-5 model against a record of 0 or of 12) is never
  auto-verified and never corrected: the bin goes to a person, reason ``OUTSIDE``, no count proposed;
- "more than K" against a record above K agrees, but only as far as "more than K" goes: the bin goes to
  a person ("too many to count") unless ``accept_overflow`` (``--accept-overflow``) lets it be
  auto-verified; against a record of K or less it is a mismatch whose correction is "at least K + 1";
- a photo predicted empty against a record that lists items (a lost or misplaced item) is never
  auto-verified, has its own reason (``PREDICTED_EMPTY``), and comes first in the decisions; nor is a
  photo predicted "more than K" against a record of K or less (``PREDICTED_MORE`` when the record rule
  would have verified it).

Every decision carries a ``reason``; the summary counts them.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bincount.counts import CountClasses
from bincount.data.files import read_text
from bincount.data.records import METADATA_DIR, parse_metadata
from bincount.errors import BincountError
from bincount.predict import Prediction

MATCH, MISMATCH, AUDIT, NOT_DECIDED = "match", "mismatch", "needs-audit", "not-decided"
# reasons
OUTSIDE = "record outside the model's counts"
TOO_MANY = "too many to count"
TOO_MANY_ACCEPTED = "too many to count, accepted as the record"  # with --accept-overflow
PREDICTED_EMPTY = "predicted empty, record not empty"
PREDICTED_MORE = "predicted more than K, record K or less"
AGREES, DISAGREES, NOT_CONFIDENT = "confident photo agrees", "confident photo disagrees", "photo not confident"
RECORD_LIKELY, OTHER_COUNT, NOT_SURE = (
    "record likely right",
    "photo points to another count",
    "record likeliest but not sure enough",
)
INPUTS_NOT_USABLE = "inputs not usable"


@dataclass(frozen=True)
class Expected:
    count: int
    skus: tuple[str, ...] = ()  # SKU names, carried along to the decisions


@dataclass
class Decision:
    bin_id: str
    decision: str
    expected_count: int | None
    # the count the model proposes; None when it proposes none (record outside its counts) or when
    # it says "more than K" (then ``predicted_at_least`` is K + 1)
    predicted_count: int | None
    confidence: float | None
    sku_names: str
    true_count: int | None = None
    # P(the record is right | photo), when decided with a record error rate
    record_probability: float | None = None
    reason: str = ""
    problem: str = ""  # why a bin is not decided (its inputs)
    predicted_at_least: int | None = None

    @property
    def predicted(self) -> str:
        """The proposed answer as one word: ``"3"``, ``"6+"``, or ``""`` when none is proposed."""
        if self.predicted_at_least is not None:
            return f"{self.predicted_at_least}+"
        return "" if self.predicted_count is None else str(self.predicted_count)

    @property
    def count_right(self) -> bool | None:
        """Whether the proposed answer holds for the bin's true count (``6+``: it holds 6 or more)."""
        if self.true_count is None:
            return None
        if self.predicted_at_least is not None:
            return self.true_count >= self.predicted_at_least
        return self.predicted_count == self.true_count

    @property
    def correct(self) -> bool | None:
        """Was an automatic decision right? ``match`` is right when the bin really holds the expected
        quantity, ``mismatch`` when it does not. None for audits, undecided and unlabelled bins."""
        if self.decision in (AUDIT, NOT_DECIDED) or self.true_count is None:
            return None
        return (self.decision == MATCH) == (self.true_count == self.expected_count)


@dataclass(frozen=True)
class Threshold:
    threshold: float
    target_precision: float | None
    precision: float | None  # accuracy of the counts at or above the threshold, on the calibration set
    coverage: float | None  # share of the calibration set at or above it
    calibration_images: int = 0
    z: float = 0.0  # the precision's Wilson lower bound at this z had to reach the target


# -- checking the inputs ------------------------------------------------------------------------
@dataclass
class InputProblems:
    """Input rows reconcile could not use, by reason (``errors``: those bins are not decided and the
    command exits 1) and rows it used once resolved (``notes``: duplicates that agree)."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def error(self, reason: str, ids) -> None:
        if ids:
            self.errors.setdefault(reason, []).extend(sorted(ids))

    def note(self, reason: str, ids) -> None:
        if ids:
            self.notes.setdefault(reason, []).extend(sorted(ids))

    def merge(self, other: InputProblems) -> InputProblems:
        for reason, ids in other.errors.items():
            self.error(reason, ids)
        for reason, ids in other.notes.items():
            self.note(reason, ids)
        return self

    def undecidable(self) -> dict[str, str]:
        """bin id -> why it cannot be decided."""
        return {i: reason for reason, ids in self.errors.items() for i in ids}

    def lines(self, show: int = 10) -> list[str]:
        out = []
        for kind, problems in (("error", self.errors), ("note", self.notes)):
            for reason, ids in problems.items():
                more = f" ... and {len(ids) - show} more" if len(ids) > show else ""
                out.append(f"{kind}: {reason}: {len(ids)} bin(s): {', '.join(ids[:show])}{more}")
        return out

    def to_dict(self) -> dict:
        return {"errors": self.errors, "notes": self.notes}


INVALID_COUNT = "expected quantity is not a non-negative integer"
CONFLICTING_EXPECTED = "expected quantities disagree between rows or sources"
DUPLICATE_EXPECTED = "expected quantity given more than once (same value, used once)"
CONFLICTING_PREDICTIONS = "photos of the bin were given different counts"
DUPLICATE_PREDICTIONS = "bin predicted from several photos with the same count (decided once, on the lowest confidence)"


def parse_count(text) -> int | None:
    """A count as a spreadsheet may write it (``3``, `` 3 ``, ``3.0``); None unless a non-negative integer."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value >= 0 and value == int(value) else None


def _rows_from_metadata(files: list[Path]) -> list[tuple[str, Expected | None]]:
    rows = []
    for f in files:
        try:
            count, skus = parse_metadata(json.loads(f.read_bytes()))  # bytes: a byte-order mark is skipped
        except (json.JSONDecodeError, UnicodeDecodeError):
            count, skus = None, ()
        rows.append((f.stem, None if count is None else Expected(count, tuple(s.name for s in skus))))
    return rows


def _rows_from_csv(path: Path) -> list[tuple[str, Expected | None]]:
    reader = csv.DictReader(read_text(path).splitlines())
    columns = {c.strip().lower(): c for c in reader.fieldnames or [] if c}  # "Bin_ID " as spreadsheets write it
    id_col = next((columns[c] for c in ("bin_id", "id") if c in columns), None)
    count_col = next((columns[c] for c in ("expected_count", "expected_quantity", "expected") if c in columns), None)
    if id_col is None or count_col is None:
        raise BincountError(
            f"{path}: needs columns bin_id and expected_count (optional sku_names, "
            f"separated by '|'); it has {', '.join(map(repr, reader.fieldnames or [])) or 'none'}"
        )
    names_col = columns.get("sku_names")
    rows = []
    for row in reader:
        bin_id = (row.get(id_col) or "").strip()
        if not bin_id:
            continue  # a blank line or a row without an id names no bin
        count = parse_count(row.get(count_col))
        names = tuple(n for n in ((row.get(names_col) if names_col else None) or "").split("|") if n)
        rows.append((bin_id, None if count is None else Expected(count, names)))
    return rows


def read_expected(sources: list[str]) -> tuple[dict[str, Expected], InputProblems]:
    """Expected quantities by bin id, and the problems of the rows: an id is used only when every row
    that names it (in any source) has a valid quantity and they agree. Sources: a CSV (bin_id,
    expected_count, sku_names), ABID metadata JSON files, a folder of them, or an ABID folder."""
    rows: list[tuple[str, Expected | None]] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            folder = path / METADATA_DIR if (path / METADATA_DIR).is_dir() else path
            rows += _rows_from_metadata(sorted(folder.glob("*.json")))
        elif path.suffix.lower() == ".json" and path.is_file():
            rows += _rows_from_metadata([path])
        elif path.suffix.lower() == ".csv" and path.is_file():
            rows += _rows_from_csv(path)
        else:
            raise BincountError(f"--expected {src}: not a CSV, a metadata JSON or a folder of them")
    if not rows:
        raise BincountError(f"--expected {' '.join(sources)}: no expected quantities found")
    by_id: dict[str, list[Expected | None]] = defaultdict(list)
    for bin_id, exp in rows:
        by_id[bin_id].append(exp)
    expected, problems = {}, InputProblems()
    invalid, conflicting, repeated = [], [], []
    for bin_id, found in by_id.items():
        if any(e is None for e in found):
            invalid.append(bin_id)
        elif len({e.count for e in found}) > 1:
            conflicting.append(bin_id)
        else:
            expected[bin_id] = max(found, key=lambda e: len(e.skus))  # the row that names the SKUs
            if len(found) > 1:
                repeated.append(bin_id)
    problems.error(INVALID_COUNT, invalid)
    problems.error(CONFLICTING_EXPECTED, conflicting)
    problems.note(DUPLICATE_EXPECTED, repeated)
    return expected, problems


def unique_predictions(predictions: list[Prediction]) -> tuple[list[Prediction], InputProblems]:
    """One prediction per bin id. Photos of one bin given the same count become one prediction with the
    lowest confidence among them (a doubt about any photo sends the bin to a person); photos given
    different counts leave the bin undecided. Nothing is decided twice."""
    by_id: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        by_id[p.id].append(p)
    kept, problems = [], InputProblems()
    conflicting, repeated = [], []
    for bin_id, group in by_id.items():
        if len({p.name for p in group}) > 1:
            conflicting.append(bin_id)
            continue
        kept.append(min(group, key=lambda p: p.confidence))
        if len(group) > 1:
            repeated.append(bin_id)
    problems.error(CONFLICTING_PREDICTIONS, conflicting)
    problems.note(DUPLICATE_PREDICTIONS, repeated)
    return kept, problems


# -- threshold ----------------------------------------------------------------------------------
def wilson_lower(hits: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Lower end of the Wilson score interval of a proportion ``hits / n`` (z=0: the proportion itself)."""
    p = hits / n
    if not z:
        return p
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float, z: float = 0.0) -> Threshold:
    """The smallest confidence threshold at which the predictions kept (confidence >= threshold) are
    right at least ``target_precision`` of the time. With ``z`` > 0 it is the Wilson lower bound of
    that precision that must reach the target, so a cut that meets it on a handful of calibration
    images by luck is not taken (z=1.645: 95% one-sided). When no cut qualifies, the threshold is
    above 1: every bin goes to a person."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    if not len(confidence):
        raise BincountError("the calibration predictions are empty; predict a labelled validation set first")
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], np.cumsum(correct[order])
    kept = np.arange(1, len(conf) + 1)
    # Only the last index of each run of equal confidences is a real cut (ties go together).
    last = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(last & (wilson_lower(hits, kept, z) >= target_precision))
    if not len(ok):
        return Threshold(float(np.nextafter(1.0, 2.0)), target_precision, None, 0.0, len(conf), z)
    i = ok[-1]  # the deepest cut that still meets the target: the smallest threshold
    return Threshold(
        float(conf[i]),
        target_precision,
        round(float(hits[i] / kept[i]), 4),
        round(float(kept[i] / len(conf)), 4),
        len(conf),
        z,
    )


def calibrate(predictions: list[Prediction], target_precision: float, z: float = 0.0) -> Threshold:
    labelled = [p for p in predictions if p.true_count is not None]
    if not labelled:
        raise BincountError(
            "the calibration predictions have no true_count; predict an ABID folder "
            "(e.g. `bincount predict CKPT DIR --split val`) to calibrate"
        )
    return choose_threshold(
        np.array([p.confidence for p in labelled]),
        np.array([p.right for p in labelled]),  # the photo's class is the bin's
        target_precision,
        z,
    )


# -- the record as evidence ---------------------------------------------------------------------
@dataclass(frozen=True)
class RecordModel:
    """How records go wrong: a share ``error_rate`` of them is wrong, and a wrong record is off by 1 to
    ``spread`` items, each way and each distance equally likely (a miscount), never below zero."""

    error_rate: float
    spread: int = 2

    def __post_init__(self):
        if not 0 < self.error_rate < 1:
            raise BincountError(f"--record-error-rate must be between 0 and 1 (exclusive), got {self.error_rate}")
        if self.spread < 1:
            raise BincountError(f"--record-error-spread must be at least 1, got {self.spread}")

    def wrong_records(self, true_count: int) -> list[int]:
        """The records a bin of ``true_count`` items can carry when its record is wrong."""
        return [true_count + d for d in range(-self.spread, self.spread + 1) if d and true_count + d >= 0]

    def likelihood(self, classes: CountClasses, index: int, expected: int) -> float:
        """P(the record says ``expected`` | the bin's true class is ``index``). A record in that very
        class is right; the overflow class is taken at its smallest count (K + 1) for how far off a
        wrong record can be."""
        if classes.index(expected) == index:
            return 1 - self.error_rate
        true = classes.value(index)
        wrong = self.wrong_records(classes.at_least if true is None else true)
        return self.error_rate / len(wrong) if expected in wrong else 0.0

    def posterior(self, classes: CountClasses, probabilities, expected: int) -> np.ndarray:
        """P(true class | photo, record), one per class: the photo's calibrated probabilities weighed by
        how likely each class is to carry this record (1 - error_rate when it is the record's class,
        else error_rate spread over the wrong records it could have)."""
        probabilities = np.asarray(probabilities, float)
        weights = probabilities * [self.likelihood(classes, i, expected) for i in range(classes.num_classes)]
        total = weights.sum()
        return weights / total if total > 0 else probabilities


def record_probability(model: RecordModel, p: Prediction, expected: int) -> float | None:
    """P(the record's class is right | photo); None when the model has no class for the record."""
    index = p.classes.index(expected)
    if index is None:
        return None
    return float(model.posterior(p.classes, list(p.probabilities.values()), expected)[index])


def choose_record_threshold(
    model: RecordModel,
    predictions: list[Prediction],
    target_precision: float,
    z: float = 0.0,
    accept_overflow: bool = False,
) -> Threshold:
    """The smallest P(record right) at which auto-verified records are right at least ``target_precision``
    of the time on labelled validation predictions, each bin taken with every record it could carry: its
    true count (weight 1 - error_rate) and each wrong record (error_rate shared among them). The Wilson
    bound counts each bin once (weights sum to one per bin). Records a bin can never be auto-verified
    with are left out: those outside the model's counts, and "more than K" records unless
    ``accept_overflow`` (then a record counts as right when it is in the bin's class)."""
    labelled = [p for p in predictions if p.true_count is not None and p.classes.covers(p.true_count)]
    if not labelled:
        raise BincountError(
            "the calibration predictions have no true_count within the model's counts; predict a "
            "labelled validation set (e.g. `bincount predict CKPT DIR --split val`)"
        )
    scores, right, weight = [], [], []
    for p in labelled:
        true_class = p.classes.index(p.true_count)
        wrong = model.wrong_records(p.true_count)
        cases = [(p.true_count, 1 - model.error_rate)] + [(e, model.error_rate / len(wrong)) for e in wrong]
        for e, w in cases:
            index = p.classes.index(e)
            if index is None or (p.classes.is_overflow(index) and not accept_overflow):
                continue
            scores.append(record_probability(model, p, e))
            right.append(index == true_class)
            weight.append(w)
    if not scores:
        raise BincountError(
            "no calibration bin could be auto-verified (every true count is 'more than K'); "
            "pass --accept-overflow or calibrate on bins with exact counts"
        )
    scores, right, weight = np.array(scores), np.array(right), np.array(weight)
    order = np.argsort(-scores, kind="stable")
    s, hits, kept = scores[order], np.cumsum((weight * right)[order]), np.cumsum(weight[order])
    last = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero(last & (wilson_lower(hits, kept, z) >= target_precision))
    if not len(ok):
        return Threshold(float(np.nextafter(1.0, 2.0)), target_precision, None, 0.0, len(labelled), z)
    i = ok[-1]
    return Threshold(
        float(s[i]),
        target_precision,
        round(float(hits[i] / kept[i]), 4),
        round(float(kept[i] / kept[-1]), 4),
        len(labelled),
        z,
    )


# -- decisions ----------------------------------------------------------------------------------
def decide(
    p: Prediction,
    exp: Expected,
    threshold: float,
    record_model: RecordModel | None = None,
    accept_overflow: bool = False,
) -> Decision:
    """One bin's decision. Without a record model: the photo's confidence against the threshold. With one:
    P(record right | photo) against the threshold; below it, ``mismatch`` names the most likely class
    when that is not the record's, else ``needs-audit``. A record the model has no class for goes to a
    person with no count proposed; "more than K" on both sides is auto-verified only with
    ``accept_overflow``; a photo predicted empty against a record that lists items is never auto-verified
    (module docstring)."""
    record = p.classes.index(exp.count)

    def made(decision: str, reason: str, index: int | None, right: float | None = None) -> Decision:
        answer = {} if index is None else p.classes.describe(index)
        return Decision(
            p.id,
            decision,
            exp.count,
            answer.get("count"),
            round(p.confidence, 6),
            "|".join(exp.skus),
            p.true_count,
            None if right is None else round(right, 6),
            reason,
            predicted_at_least=answer.get("at_least"),
        )

    if record is None:  # no correction: the model could only answer a count the bin does not hold
        return made(AUDIT, OUTSIDE, None)
    right = None
    if record_model is None:
        index = p.index
        if p.confidence < threshold:
            decision, reason = AUDIT, NOT_CONFIDENT
        else:
            decision, reason = (MATCH, AGREES) if index == record else (MISMATCH, DISAGREES)
    else:
        posterior = record_model.posterior(p.classes, list(p.probabilities.values()), exp.count)
        right, index = float(posterior[record]), int(np.argmax(posterior))
        if right >= threshold:
            decision, reason, index = MATCH, RECORD_LIKELY, record
        elif index != record:
            decision, reason = MISMATCH, OTHER_COUNT
        else:
            decision, reason = AUDIT, NOT_SURE
    if decision == MATCH and p.classes.is_overflow(record):
        decision, reason = (MATCH, TOO_MANY_ACCEPTED) if accept_overflow else (AUDIT, TOO_MANY)
    elif decision == MATCH and p.classes.is_overflow(p.index):
        # the record rule explained the photo away (a record is off by at most ``spread`` in its model):
        # a photo saying "more than K" is not overruled by a record of K or less
        decision, reason, index = AUDIT, PREDICTED_MORE, p.index
    if p.count == 0 and exp.count > 0:  # the photo says empty, the record lists items: a lost item?
        decision, reason, index = (MISMATCH if decision == MISMATCH else AUDIT), PREDICTED_EMPTY, p.index
    return made(decision, reason, index, right)


def audit_order(decisions: list[Decision]) -> list[Decision]:
    """Bins predicted empty against a record that lists items first (a lost or misplaced item: the bin
    a warehouse most wants checked), then by bin id."""
    return sorted(decisions, key=lambda d: (d.reason != PREDICTED_EMPTY, d.bin_id))


def reconcile(
    predictions: list[Prediction],
    expected: dict[str, Expected],
    threshold: float,
    record_model: RecordModel | None = None,
    accept_overflow: bool = False,
) -> tuple[list[Decision], dict[str, list[str]]]:
    """One decision per bin that has both a prediction and an expected quantity (in ``audit_order``);
    the other bins by reason. ``predictions`` must hold one per bin (``unique_predictions``)."""
    repeated = [i for i, n in Counter(p.id for p in predictions).items() if n > 1]
    if repeated:
        raise BincountError(
            f"reconcile: bins predicted more than once ({', '.join(sorted(repeated)[:5])}); "
            "pass the predictions through unique_predictions first"
        )
    decisions = []
    predicted_ids = {p.id for p in predictions}
    unmatched = {
        "no expected quantity": sorted(p.id for p in predictions if p.id not in expected),
        "no photo": sorted(set(expected) - predicted_ids),
    }
    for p in predictions:
        exp = expected.get(p.id)
        if exp is not None:
            decisions.append(decide(p, exp, threshold, record_model, accept_overflow))
    return audit_order(decisions), unmatched


def add_undecided(
    decisions: list[Decision],
    unmatched: dict[str, list[str]],
    problems: InputProblems,
    photographed: set[str],
    expected: dict[str, Expected],
) -> list[Decision]:
    """A ``not-decided`` row for every photographed bin whose inputs had an error; such bins leave the
    unmatched lists (they are not missing a photo or a record, their inputs are wrong). In ``audit_order``."""
    undecidable = problems.undecidable()
    rows = [
        Decision(
            i,
            NOT_DECIDED,
            expected[i].count if i in expected else None,
            None,
            None,
            "|".join(expected[i].skus) if i in expected else "",
            reason=INPUTS_NOT_USABLE,
            problem=why,
        )
        for i, why in sorted(undecidable.items())
        if i in photographed
    ]
    for reason in unmatched:
        unmatched[reason] = [i for i in unmatched[reason] if i not in undecidable]
    return audit_order(decisions + rows)


def _share(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def summarize(
    decisions: list[Decision],
    threshold: Threshold,
    unmatched: dict[str, list[str]],
    problems: InputProblems | None = None,
) -> dict:
    """Counts of each decision; where true counts are known, how often each kind of decision was right."""
    counts = Counter(d.decision for d in decisions)
    summary = {
        "bins": len(decisions),
        "auto_verified": counts[MATCH],
        "auto_verified_share": _share(counts[MATCH], len(decisions)),
        "to_check": len(decisions) - counts[MATCH],
        MATCH: counts[MATCH],
        MISMATCH: counts[MISMATCH],
        AUDIT: counts[AUDIT],
        NOT_DECIDED: counts[NOT_DECIDED],
        "threshold": asdict(threshold),
        "reasons": dict(Counter(d.reason for d in decisions)),
        "unmatched": {k: len(v) for k, v in unmatched.items()},
        "input_problems": (problems or InputProblems()).to_dict(),
        "complete": not (problems and problems.errors),
    }
    labelled = [d for d in decisions if d.true_count is not None and d.decision != NOT_DECIDED]
    if not labelled:
        return summary
    confident = [d for d in labelled if d.decision != AUDIT]
    wrong_records = [d for d in labelled if d.true_count != d.expected_count]
    summary["labelled"] = {
        "bins": len(labelled),
        # an auto-verified bin really holds its expected quantity / a mismatch really is a discrepancy
        "match_accuracy": _share(
            sum(d.correct for d in confident if d.decision == MATCH), sum(d.decision == MATCH for d in confident)
        ),
        "mismatch_accuracy": _share(
            sum(d.correct for d in confident if d.decision == MISMATCH), sum(d.decision == MISMATCH for d in confident)
        ),
        "confident_decision_accuracy": _share(sum(d.correct for d in confident), len(confident)),
        # the proposed answer holds for the bin ("6+" for 12 items holds; no answer proposed does not)
        "count_accuracy_confident": _share(sum(d.count_right for d in confident), len(confident)),
        "count_accuracy_all": _share(sum(d.count_right for d in labelled), len(labelled)),
        "wrong_records": len(wrong_records),
        "wrong_records_sent_to_a_person": sum(d.decision != MATCH for d in wrong_records),
        "wrong_records_caught": _share(sum(d.decision != MATCH for d in wrong_records), len(wrong_records)),
    }
    return summary


def write_decisions(decisions: list[Decision], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = [
        "bin_id",
        "decision",
        "expected_count",
        "predicted_count",
        "predicted_at_least",
        "confidence",
        "sku_names",
        "true_count",
        "record_probability",
        "reason",
        "problem",
    ]
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for d in decisions:
            w.writerow({k: ("" if v is None else v) for k, v in asdict(d).items()})
    return out
