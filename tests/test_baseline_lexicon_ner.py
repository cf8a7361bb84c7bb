"""The lexicon floor of benchmarks/baseline_lexicon_ner.py on hand-made sentences."""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
spec = importlib.util.spec_from_file_location(
    "baseline_lexicon_ner", os.path.join(HERE, "..", "benchmarks", "baseline_lexicon_ner.py"))
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)

from task_ner import Sentence  # noqa: E402


def test_lexicon_keeps_the_most_frequent_type_and_drops_single_characters():
    train = [Sentence("北京大学在北京", [(0, 4, "ORG"), (5, 7, "LOC")]),
             Sentence("北京很大", [(0, 2, "LOC")]), Sentence("去北京", [(1, 3, "ORG")]),
             Sentence("中方", [(0, 1, "LOC")])]
    assert baseline.build_lexicon(train) == {"北京大学": "ORG", "北京": "LOC"}
    assert baseline.build_lexicon(train, min_length=1)["中"] == "LOC"


def test_longest_match_first_without_overlaps():
    lexicon = {"北京": "LOC", "北京大学": "ORG", "大学生": "PER"}
    # at 0 the longest entry wins and the scan moves past it: 大学生 overlapping it is not taken
    assert baseline.longest_match("北京大学生在北京", lexicon, 4) == {(0, 4, "ORG"),
                                                                 (6, 8, "LOC")}
    assert baseline.longest_match("没有", lexicon, 4) == set()
