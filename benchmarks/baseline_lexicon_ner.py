"""The floor any NER result is read against: a lexicon of the training entities.

Every entity surface of the training file of at least ``--min-length`` characters (2:
one-character entities such as 中 or 京 would match inside every other word, F1 0.37
with them on MSRA) becomes a lexicon entry, with the type it carries most often; a
validation sentence is scanned left to right, taking at each
position the longest entry that starts there (and moving past it), else the next
character. Scored as the NER example scores: exact (start, end, type) character spans,
micro-averaged, per type (``bertkit.tasks.spans.entity_scores``). Reads the CoNLL
layout through the example's reader. Pure Python; prints the table and the wall time.

    python benchmarks/baseline_lexicon_ner.py ../shared/data/ner_msra/msra.train.txt \\
        ../shared/data/ner_msra/msra.valid.txt
"""
import argparse
import collections
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

from bertkit.tasks.spans import entity_scores  # noqa: E402


def build_lexicon(sentences, min_length=2):
    """``{surface: type}``: each training entity's text of at least ``min_length``
    characters, with its most frequent type."""
    counts = collections.defaultdict(collections.Counter)
    for sentence in sentences:
        for start, end, kind in sentence.entities:
            counts[sentence.text[start:end]][kind] += 1
    return {surface: types.most_common(1)[0][0] for surface, types in counts.items()
            if len(surface) >= min_length}


def longest_match(text, lexicon, longest):
    """``{(start, end, type)}`` of lexicon entries in ``text``, longest first, no overlap."""
    found, i = set(), 0
    while i < len(text):
        for end in range(min(len(text), i + longest), i, -1):
            kind = lexicon.get(text[i:end])
            if kind:
                found.add((i, end, kind))
                i = end
                break
        else:
            i += 1
    return found


def main(argv=None):
    from task_ner import read_conll, score_table

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("train")
    p.add_argument("valid")
    p.add_argument("--min-length", type=int, default=2,
                   help="shortest entity kept in the lexicon (default 2)")
    args = p.parse_args(argv)
    start = time.time()
    lexicon = build_lexicon(read_conll(args.train), args.min_length)
    longest = max(map(len, lexicon))
    valid = read_conll(args.valid)
    predicted = [longest_match(s.text, lexicon, longest) for s in valid]
    scores = entity_scores([s.entities for s in valid], predicted)
    print(f"lexicon of {len(lexicon)} training entities, longest match first, on "
          f"{len(valid)} sentences ({time.time() - start:.1f} s):\n{score_table(scores)}")
    return scores


if __name__ == "__main__":
    main()
