"""How precise are a model's links? Precision against threshold from curators' judgements.

Heritage Weaver's question: above which similarity can a link between two
collections be trusted, and which model's links are better?  For every model
(fused ones included), level and comparison type of the ``links`` table this
counts the judged links and computes

- precision at each threshold of a grid (0.30 to 0.95 by 0.05): of the judged
  links with similarity at or above it, the share judged positive
  (``same object`` or ``similar object`` unless told otherwise);
- precision@1: of the judged rank-1 links (each source's best match), the share positive;
- the lowest grid threshold whose precision reaches a target.

A link's verdict is its pair's newest current judgement, whichever model's link
the curator was looking at (``storage.judgements.verdicts``): whether two records
show the same object does not depend on the model, and one set of judgements can
then compare every model that links the same pair.

Links of a stale run (a ``load`` changed the model after ``links`` ran) are left
out and the report names the run, as the links page stops serving them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from . import links as links_engine
from ..errors import InvalidRequestError
from ..storage import judgements as store_judgements

THRESHOLDS: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
DEFAULT_POSITIVES: tuple[str, ...] = ("same object", "similar object")
DEFAULT_TARGET = 0.9
#: a float32 similarity of 0.7 reads back as 0.69999999; it is still "at or above 0.70"
_EPSILON = 1e-6


@dataclass(frozen=True)
class JudgedLink:
    """One link of the ``links`` table whose pair has a verdict."""

    model: str
    level: str
    comparison: str
    similarity: float
    rank: int
    label: str


def check_options(positives: Sequence[str] | None, target: float | None) -> tuple[tuple[str, ...], float]:
    """The positive labels and the target precision, checked; InvalidRequestError names what is wrong."""
    chosen = tuple(dict.fromkeys(p.strip() for p in (positives or DEFAULT_POSITIVES) if p and p.strip()))
    for label in chosen:
        if label not in store_judgements.LABELS:
            raise InvalidRequestError(f"unknown positive label '{label[:40]}'; use any of: {', '.join(store_judgements.LABELS)}")
    if not chosen:
        chosen = DEFAULT_POSITIVES
    target = DEFAULT_TARGET if target is None else target
    if not (0 < target <= 1):
        raise InvalidRequestError(f"precision must be above 0 and at most 1, got {target}")
    return chosen, float(target)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(
    judged: Iterable[JudgedLink],
    link_counts: Mapping[tuple[str, str, str], int],
    *,
    positives: Sequence[str] = DEFAULT_POSITIVES,
    target: float = DEFAULT_TARGET,
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[dict]:
    """One result per (model, level, comparison): the pure arithmetic, so tests can check it by hand."""
    positive_labels = set(positives)
    groups: dict[tuple[str, str, str], list[JudgedLink]] = {key: [] for key in link_counts}
    for link in judged:
        groups.setdefault((link.model, link.level, link.comparison), []).append(link)
    out = []
    for (model, level, comparison), links in sorted(groups.items()):
        positive = [link.label in positive_labels for link in links]
        rows = []
        for t in thresholds:
            above = [p for link, p in zip(links, positive) if link.similarity >= t - _EPSILON]
            rows.append({"threshold": t, "judged": len(above), "positive": sum(above), "precision": _ratio(sum(above), len(above))})
        firsts = [p for link, p in zip(links, positive) if link.rank == 1]
        out.append(
            {
                "model": model,
                "level": level,
                "comparison": comparison,
                "links": int(link_counts.get((model, level, comparison), len(links))),
                "judged": len(links),
                "positive": sum(positive),
                "precision": _ratio(sum(positive), len(links)),
                "labels": {label: sum(1 for link in links if link.label == label) for label in store_judgements.LABELS},
                "precision_at_1": {"judged": len(firsts), "positive": sum(firsts), "precision": _ratio(sum(firsts), len(firsts))},
                "thresholds": rows,
                "threshold_for_precision": threshold_reaching(rows, target),
            }
        )
    return out


def threshold_reaching(rows: Sequence[dict], target: float) -> float | None:
    """The lowest threshold whose precision (over every judged link at or above it) reaches target.

    Precision at a threshold already counts every link above it, so this is the
    answer to "publish the links from which similarity, to be right this often?".
    """
    for row in rows:  # lowest threshold first
        if row["judged"] and row["precision"] is not None and row["precision"] >= target - 1e-12:
            return row["threshold"]
    return None


def _links_table(conn) -> bool:
    return conn.execute("select 1 from sqlite_master where type = 'table' and name = 'links'").fetchone() is not None


def evaluate(
    conn, *, positives: Sequence[str] | None = None, target: float | None = None, models: Sequence[str] = (),
) -> dict:
    """The evaluation of every model's stored links against the database's judgements."""
    positives, target = check_options(positives, target)
    verdicts = store_judgements.verdicts(conn)
    report = {
        "positives": list(positives),
        "target_precision": target,
        "thresholds": list(THRESHOLDS),
        "judgements": len(verdicts),
        "has_links": _links_table(conn),
        "groups": [],
        "unmatched_judgements": len(verdicts),
        "stale_runs": [],
    }
    if not report["has_links"]:
        return report
    versions: dict[str, str] = {}
    stale = {
        key for key, run in links_engine.stored_runs(conn).items()
        if (not models or run["model"] in models) and not links_engine.is_current(conn, run, versions)
    }
    report["stale_runs"] = [
        {"model": m, "level": lv, "source_provider": sp, "target_provider": tp} for m, lv, sp, tp in sorted(stale)
    ]
    where, params = "", []
    if models:
        where = " where model in (" + ",".join("?" for _ in models) + ")"
        params = list(models)
    counts: dict[tuple[str, str, str], int] = {}
    for m, lv, c, sp, tp, n in conn.execute(
        "select model, level, comparison, source_provider, target_provider, count(*) "
        f"from links{where} group by model, level, comparison, source_provider, target_provider",
        params,
    ):
        if (m, lv, sp, tp) not in stale:
            counts[(m, lv, c)] = counts.get((m, lv, c), 0) + n
    judged, matched = [], set()
    if verdicts:
        rows = conn.execute(
            "select model, level, comparison, source_provider, source_key, target_provider, target_key, similarity, rank "
            f"from links{where}",
            params,
        ) if len(verdicts) * 4 > sum(counts.values()) else _judged_links(conn, verdicts, models)
        for model, level, comparison, sp, sk, tp, tk, similarity, rank in rows:
            verdict = verdicts.get((level, sp, sk, tp, tk))
            if verdict is None or (model, level, sp, tp) in stale:
                continue
            matched.add((level, sp, sk, tp, tk))
            judged.append(JudgedLink(model, level, comparison, float(similarity), int(rank), verdict.label))
    report["groups"] = summarise(judged, counts, positives=positives, target=target)
    report["unmatched_judgements"] = len(verdicts) - len(matched)
    return report


def _judged_links(conn, verdicts, models: Sequence[str]):
    """The links of judged pairs only, one indexed read per judged source (few judgements, many links)."""
    sources = sorted({(key[1], key[2]) for key in verdicts})
    model_filter = set(models)
    for provider, key in sources:
        for row in conn.execute(
            "select model, level, comparison, source_provider, source_key, target_provider, target_key, similarity, rank "
            "from links where source_provider = ? and source_key = ?",
            [provider, key],
        ):
            if not model_filter or row[0] in model_filter:
                yield row


def text_table(report: dict) -> str:
    """The evaluation as plain text, for ``datasette-embeddings evaluate``."""
    lines = [
        f"{report['judgements']:,} judged links; positives: {', '.join(report['positives'])}; "
        f"target precision {report['target_precision']:.2f}"
    ]
    if not report["has_links"]:
        lines.append("No links table: run `datasette-embeddings links` first.")
        return "\n".join(lines) + "\n"
    for run in report["stale_runs"]:
        lines.append(
            f"Left out, stale: {run['model']} {run['level']} links from {run['source_provider']} to "
            f"{run['target_provider']} (run `datasette-embeddings links` again)."
        )
    if report["unmatched_judgements"]:
        lines.append(f"{report['unmatched_judgements']:,} judged pair(s) are not among the stored links.")
    groups = report["groups"]
    if not groups:
        lines.append("No links stored.")
        return "\n".join(lines) + "\n"
    header = ["model", "level", "comparison", "links", "judged", "precision", "P@1 (judged)", f"threshold for {report['target_precision']:.2f}"]
    body = []
    for g in groups:
        p1 = g["precision_at_1"]
        body.append([
            g["model"], g["level"], g["comparison"], f"{g['links']:,}", f"{g['judged']:,}", _fmt(g["precision"]),
            f"{_fmt(p1['precision'])} ({p1['judged']})", _fmt(g["threshold_for_precision"]),
        ])
    lines += [""] + _columns(header, body)
    lines += ["", "Precision at threshold (judged links at or above it):"]
    names = [f"[{i + 1}]" for i in range(len(groups))]
    for i, g in enumerate(groups):
        lines.append(f"  [{i + 1}] {g['model']} {g['level']} {g['comparison']}")
    rows = []
    for j, t in enumerate(report["thresholds"]):
        rows.append([f"{t:.2f}"] + [f"{_fmt(g['thresholds'][j]['precision'])} ({g['thresholds'][j]['judged']})" for g in groups])
    lines += _columns(["threshold"] + names, rows)
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
