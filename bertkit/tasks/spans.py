"""Entities as spans: tag schemes to spans and back, and exact-span scores.

:func:`tags_to_spans` reads BIO, IOB2 and BIOES tag sequences (CoNLL's lenient rule: an
``I-`` that does not continue an entity of its type starts one), :func:`spans_to_tags`
writes IOB2 or BIOES, and :func:`entity_scores` gives exact-span precision, recall and
F1, per type and micro-averaged. Spans are ``(start, end, type)`` with ``end``
exclusive, in whatever positions the caller counts (tokens, characters).
"""
import collections

__all__ = ["tags_to_spans", "spans_to_tags", "Score", "entity_scores"]


def tags_to_spans(tags):
    """The entities of a tag sequence, ``[(start, end, type)]`` with ``end`` exclusive.

    Reads IOB2 (``B-`` starts every entity), BIO/IOB1 (``B-`` only between two entities of
    one type) and BIOES (``E-`` ends, ``S-`` is a one-token entity; ``M-`` is read as
    ``I-``), with CoNLL's lenient rule: an ``I-``/``E-`` that does not continue an entity
    of its type starts a new one, so no tag is dropped.

    >>> tags_to_spans(['B-PER', 'I-PER', 'O', 'I-LOC', 'S-ORG'])
    [(0, 2, 'PER'), (3, 4, 'LOC'), (4, 5, 'ORG')]
    """
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, name = str(tag).partition("-")
        if prefix in ("I", "M", "E") and start is not None and name == kind:
            if prefix == "E":
                spans.append((start, i + 1, kind))
                start = kind = None
            continue
        if start is not None:
            spans.append((start, i, kind))
            start = kind = None
        if prefix in ("B", "I", "M"):
            start, kind = i, name
        elif prefix in ("S", "E"):
            spans.append((i, i + 1, name))
    return spans


def spans_to_tags(spans, length, scheme="IOB2"):
    """Tags of ``length`` positions for non-overlapping ``spans`` ``[(start, end, type)]``,
    in ``scheme`` ``'IOB2'`` or ``'BIOES'``.

    Raises:
        ValueError: spans that overlap or leave ``[0, length)``.
    """
    if scheme not in ("IOB2", "BIOES"):
        raise ValueError(f"scheme must be 'IOB2' or 'BIOES', got {scheme!r}")
    tags = ["O"] * length
    for start, end, kind in sorted(spans):
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(start, end, kind)} is outside 0..{length}")
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span {(start, end, kind)} overlaps another entity")
        tags[start:end] = [f"I-{kind}"] * (end - start)
        tags[start] = f"B-{kind}"
        if scheme == "BIOES":
            tags[end - 1] = f"E-{kind}" if end - start > 1 else f"S-{kind}"
    return tags


Score = collections.namedtuple("Score", "precision recall f1 predicted gold correct")


def entity_scores(gold, predicted):
    """Exact-span precision, recall and F1 (the CoNLL rule), per type and micro-averaged.

    Args:
        gold, predicted: one collection of ``(start, end, type)`` per sentence (the same
            sentences, in order).

    Returns:
        ``{type: Score, ..., 'all': Score}`` (``Score``: precision, recall, f1 and the
        counts of predicted, gold and correct entities).
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    counts = collections.defaultdict(lambda: [0, 0, 0])  # predicted, gold, correct
    for gold_spans, predicted_spans in zip(gold, predicted):
        gold_spans, predicted_spans = set(gold_spans), set(predicted_spans)
        for key, spans in ((0, predicted_spans), (1, gold_spans),
                           (2, gold_spans & predicted_spans)):
            for span in spans:
                counts[span[2]][key] += 1
                counts[None][key] += 1

    def score(n_predicted, n_gold, n_correct):
        precision = n_correct / n_predicted if n_predicted else 0.0
        recall = n_correct / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return Score(precision, recall, f1, n_predicted, n_gold, n_correct)

    table = {kind: score(*counts[kind]) for kind in sorted(k for k in counts if k is not None)}
    table["all"] = score(*counts[None])
    return table
