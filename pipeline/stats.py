"""The accounting: `stats.json` computed from the data, on every runner.

`read` is counted where each source emits its records (pairs and drops alike), `kept` from the
pairs that reach the writer, `dropped` from every stage's `Drop` records. Runners differ in
whether they commit metrics, so none of this uses Beam metrics. `check_stats` verifies
`read = kept + sum(dropped)` for every source after the run. With scoring on, `scores` holds the
summaries of the scores per source (`pipeline.scoring.summary`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import apache_beam as beam

from pipeline.dedupe import DUPLICATE
from pipeline.hosts import merge_host_stats
from pipeline.scoring.summary import SUMMARIES, empty_summary

READ, KEPT, DROPPED_REASON, HOST, SCORES = "read", "kept", "dropped", "host", "scores"


def build_stats(
    entries: Iterable[tuple[str, object, int]], source_names: Sequence[str], scored: bool = False
) -> dict:
    """`stats.json` from `(what, key, count)` entries.

    `what` is `read` or `kept` with a source name as key, `dropped` with `(source, reason)`,
    `host` with a host name and its counts (the images stage's requests, 429/503 refusals,
    pauses and waits: `pipeline.hosts`), which go under `hosts` for the hosts that refused
    requests or made the run wait, or `scores` with `(source, summary name)` and a summary
    (`pipeline.scoring.summary`), which go under `scores` when the run `scored`: every source,
    each with every summary (an empty one where it scored nothing).
    Every source of the manifest appears, in manifest order, even when it held nothing.
    """
    sources = {name: {"read": 0, "kept": 0, "dropped": {}} for name in source_names}
    hosts = []
    summaries = {}
    for what, key, count in entries:
        if what == HOST:
            hosts.append((key, count))
        elif what == SCORES:
            summaries[key] = count
        elif what == DROPPED_REASON:
            name, reason = key
            dropped = sources.setdefault(name, {"read": 0, "kept": 0, "dropped": {}})["dropped"]
            dropped[reason] = dropped.get(reason, 0) + count
        else:
            sources.setdefault(key, {"read": 0, "kept": 0, "dropped": {}})[what] += count
    for entry in sources.values():
        entry["dropped"] = dict(sorted(entry["dropped"].items()))
    stats = {
        "sources": sources,
        "kept": sum(s["kept"] for s in sources.values()),
        "duplicates_removed": sum(s["dropped"].get(DUPLICATE, 0) for s in sources.values()),
    }
    # Only hosts that refused or made the run wait: a clean run's stats.json stays the same
    # from run to run (request counts depend on what the image cache held).
    held_back = {
        host: counts
        for host, counts in merge_host_stats(hosts).items()
        if counts["throttled"] or counts["pauses"] or counts["rate_waits"]
    }
    if held_back:
        stats["hosts"] = held_back
    if scored:
        stats[SCORES] = {
            name: {score: summaries.get((name, score)) or empty_summary() for score in SUMMARIES}
            for name in sources
        }
    return stats


def check_stats(stats: dict) -> list[str]:
    """The sources whose books do not balance, as messages (empty when all is accounted for)."""
    problems = []
    for name, s in stats["sources"].items():
        dropped = sum(s["dropped"].values())
        if s["read"] != s["kept"] + dropped:
            problems.append(
                f"{name}: read {s['read']} != kept {s['kept']} + dropped {dropped}"
                f" ({s['read'] - s['kept'] - dropped:+d} unaccounted)"
            )
    return problems


class ComputeStats(beam.PTransform):
    """`(read_pairs, read_drops, kept, dropped[, hosts][, scores])` → one element: the
    `stats.json` dict.

    `read_pairs`/`read_drops` are what the sources emitted; `kept` the pairs that reach the
    writer; `dropped` every `Drop` of every stage, the sources' own included; `hosts` the
    images stage's `(host, counts)` (`FetchImages(with_hosts=True)`); `scores`, last, given
    when `scored`: the scoring stage's `(source, summary name, summary)`
    (`ScorePairs(with_scores=True)`).
    """

    def __init__(self, source_names: Sequence[str], *, scored: bool = False):
        super().__init__()
        self._source_names = tuple(source_names)
        self._scored = scored

    def expand(self, pcolls):
        read_pairs, read_drops, kept, dropped, *rest = pcolls
        scores = rest.pop() if self._scored else None
        hosts = rest
        read = (
            (
                read_pairs | "ReadPairs" >> beam.Map(lambda p: (p.source_name, 1)),
                read_drops | "ReadDrops" >> beam.Map(lambda d: (d.source_name, d.count)),
            )
            | "AllRead" >> beam.Flatten()
            | "SumRead" >> beam.CombinePerKey(sum)
            | "TagRead" >> beam.Map(lambda kv: (READ, kv[0], kv[1]))
        )
        kept_counts = (
            kept
            | "KeptKeys" >> beam.Map(lambda p: (p.source_name, 1))
            | "SumKept" >> beam.CombinePerKey(sum)
            | "TagKept" >> beam.Map(lambda kv: (KEPT, kv[0], kv[1]))
        )
        drop_counts = (
            dropped
            | "DropKeys" >> beam.Map(lambda d: ((d.source_name, d.reason), d.count))
            | "SumDropped" >> beam.CombinePerKey(sum)
            | "TagDropped" >> beam.Map(lambda kv: (DROPPED_REASON, kv[0], kv[1]))
        )
        counts = [read, kept_counts, drop_counts]
        if hosts:
            counts.append(hosts[0] | "TagHosts" >> beam.Map(lambda kv: (HOST, kv[0], kv[1])))
        if scores is not None:
            tagged = scores | "TagScores" >> beam.MapTuple(
                lambda source, name, summary: (SCORES, (source, name), summary)
            )
            counts.append(tagged)
        names, scored = self._source_names, self._scored
        return (
            counts
            | "AllCounts" >> beam.Flatten()
            | "Gather" >> beam.combiners.ToList()
            | "Build" >> beam.Map(lambda entries: build_stats(entries, names, scored))
        )
