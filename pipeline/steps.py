"""The shape of a stage: its declared drop reasons, the routing of rejects, and the `Step` base.

A stage declares its name and every drop reason it can emit (`Reasons`: name → one-line
meaning); the declarations together are the one list of reasons (`pipeline.reasons`), which
stats, the report and the README's table read. A stage that judges one pair at a time subclasses
`Step` and writes a pure `judge(element) -> Pair | Reject`; the base owns the rest: the
catch-all (`<stage>_error`: one bad record is counted, never fatal), the check that every emitted
reason is declared, the `dropped` output and a Beam counter per reason (live progress only:
`stats.json` counts the `Drop` records, on every runner). Batched stages (`RunInference`, the
image fetcher's scheduler) keep their batching and route through the same `Reasons.drop`.

A reason may stand for a family: a declared name holding `<...>` (`http_<status>`) matches any
lower-case word in that place (`http_404`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.records import DROPPED, Drop, Pair

_FAMILY_PART = re.compile(r"<[^<>]+>")
_LOG = logging.getLogger(__name__)


class Reject(NamedTuple):
    """A stage's verdict against a pair: a declared reason and what a reader needs to check it."""

    reason: str
    detail: str | None = None


class UndeclaredReason(ValueError):
    """A stage emitted a reason it did not declare: a bug in the stage, not in the input."""


class Reasons(Mapping[str, str]):
    """The drop reasons of one stage (or one source kind): name → one-line meaning.

    `catch_all` is the reason of a record the stage failed on unexpectedly (`<stage>_error`
    unless given); it is declared with the others.
    """

    def __init__(self, stage: str, reasons: Mapping[str, str], *, catch_all: str | None = None):
        self.stage = stage
        self.catch_all = catch_all or f"{stage}_error"
        self._reasons = dict(reasons)
        self._reasons.setdefault(
            self.catch_all, f"the {stage} stage failed on the record unexpectedly (detail: error)"
        )
        self._families = [
            (name, re.compile("^" + _FAMILY_PART.sub("[a-z0-9_]+", re.escape(name)) + "$"))
            for name in self._reasons
            if _FAMILY_PART.search(name)
        ]
        # re.escape leaves `<` and `>` alone, so the placeholder survives escaping.

    def __getitem__(self, name: str) -> str:
        return self._reasons[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._reasons)

    def __len__(self) -> int:
        return len(self._reasons)

    def declared(self, reason: str) -> str | None:
        """The declared name `reason` falls under (itself, or its family), or None."""
        if reason in self._reasons:
            return reason
        return next((name for name, pattern in self._families if pattern.match(reason)), None)

    def check(self, reason: str) -> str:
        """`reason` when declared, else `UndeclaredReason`."""
        if self.declared(reason) is None:
            raise UndeclaredReason(f"{self.stage}: drop reason {reason!r} is not declared")
        return reason

    def drop(
        self, pair: Pair, reason: str, detail: str | None = None, *, count: bool = True
    ) -> Drop:
        """The `Drop` of `pair` under `reason`, counted (`count=False` off the DoFn's thread,
        where Beam counters are not bound: the stage counts it when it routes it). An undeclared
        reason becomes the catch-all, its detail naming it, and is logged: a run never dies on
        it."""
        try:
            self.check(reason)
        except UndeclaredReason as err:
            _LOG.error("%s", err)
            reason, detail = self.catch_all, f"{err}: {detail}"[:300]
        dropped = Drop(
            pair.source_name,
            reason,
            pair.input_file,
            pair.input_line,
            detail,
            stage=self.stage,
            pair_id=pair.id,
            caption_ar=pair.caption_ar or None,
            caption_en=pair.caption_en,
            image_url=pair.image_url,
        )
        return self.count(dropped) if count else dropped

    def failed(self, pair: Pair, error: BaseException, *, count: bool = True) -> Drop:
        """The catch-all `Drop` of a pair the stage failed on."""
        detail = f"{type(error).__name__}: {error}"[:300]
        return self.drop(pair, self.catch_all, detail, count=count)

    def count(self, dropped: Drop) -> Drop:
        """`dropped`, counted under `<stage>:dropped_<reason>` (live progress only)."""
        Metrics.counter(self.stage, f"dropped_{dropped.reason}").inc(dropped.count)
        return dropped

    def checked(self, dropped: Drop) -> Drop:
        """A reader's `Drop`, counted, as it is when its reason is declared, else under the
        catch-all (logged, its detail naming the reason), its `stage` this declaration's:
        every source's drops pass through this (`pipeline.build`)."""
        if self.declared(dropped.reason) is None:
            _LOG.error("%s: drop reason %r is not declared", self.stage, dropped.reason)
            detail = f"undeclared {dropped.reason}: {dropped.detail}"[:300]
            dropped = dropped._replace(reason=self.catch_all, detail=detail)
        if dropped.stage is None:
            dropped = dropped._replace(stage=self.stage)
        return self.count(dropped)


class _Judge(beam.DoFn):
    """Calls the step's `judge` on each element; rejects go to `dropped`, counted."""

    def __init__(self, step: Step):
        self._step = step

    def setup(self):
        self._step.setup()
        self._kept = Metrics.counter(self._step.REASONS.stage, "kept")

    def process(self, element: Any):
        step, reasons = self._step, self._step.REASONS
        try:
            verdict = step.judge(element)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never fatal
            yield beam.pvalue.TaggedOutput(DROPPED, reasons.failed(step.pair_of(element), err))
            return
        if isinstance(verdict, Reject):
            pair = step.pair_of(element)
            yield beam.pvalue.TaggedOutput(DROPPED, reasons.drop(pair, *verdict))
        else:
            self._kept.inc()
            yield verdict


class Step(beam.PTransform):
    """A stage that judges one element at a time: `pairs → (kept, dropped)`.

    A subclass sets `REASONS` (its `STAGE` is `REASONS.stage`) and writes `judge(element)`,
    returning the pair to keep (changed or not) or a `Reject`. `judge` must be pure: the same
    element gives the same verdict on any worker. `setup()` runs once per worker before the
    first `judge` (load a model there, never in `__init__`). A stage whose elements are not
    pairs (a `(pair, prediction)` from `RunInference`) says where the pair is in `pair_of`, and
    runs the base's judging on them with `judged(elements)` inside its own `expand`.
    """

    REASONS: ClassVar[Reasons]

    @property
    def STAGE(self) -> str:  # noqa: N802 - read like the class constant it stands for
        return self.REASONS.stage

    def judge(self, element: Any) -> Pair | Reject:
        raise NotImplementedError

    def setup(self) -> None:
        """Per-worker preparation before the first `judge`; nothing by default."""

    def pair_of(self, element: Any) -> Pair:
        """The pair an element carries (the element itself by default)."""
        return element

    def judged(self, elements, label: str = "Judge"):
        """`(kept, dropped)` of `elements` through `judge`."""
        out = elements | label >> beam.ParDo(_Judge(self)).with_outputs(DROPPED, main="kept")
        return out.kept, out[DROPPED]

    def expand(self, pairs):
        return self.judged(pairs)

    def __getstate__(self) -> dict[str, Any]:
        # The step travels to the workers inside its DoFn: without the pipeline it was applied to.
        state = self.__dict__.copy()
        state["pipeline"] = None
        return state
