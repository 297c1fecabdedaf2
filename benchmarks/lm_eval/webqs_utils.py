"""Scoring for webqs_local.yaml: selfensemble's own exact / partial match against every gold answer."""

from selfensemble.scoring import is_correct


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """One generation → {exact_match, partial_match} in {0, 1}, against all of the doc's answers."""
    prediction = results[0].strip()
    return {"exact_match": float(is_correct(prediction, doc["answers"], "exact")),
            "partial_match": float(is_correct(prediction, doc["answers"], "partial"))}
