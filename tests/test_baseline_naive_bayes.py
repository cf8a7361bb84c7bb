"""The naive Bayes floor of benchmarks/baseline_naive_bayes.py, against a reference
written here with Counters and the textbook formula."""
import importlib.util
import math
import os
from collections import Counter

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "baseline_naive_bayes", os.path.join(HERE, "..", "benchmarks", "baseline_naive_bayes.py"))
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)

TRAIN = [("质量很好", 1), ("很好 很喜欢", 1), ("太差了", 0), ("质量差 不喜欢", 0), ("好", 1)]


def reference_scores(train, text, alpha=1.0):
    """log P(c) + sum over the text's known 1- and 2-grams of log P(gram | c)."""
    def grams(s):
        s = "".join(s.split())
        return [s[i:i + n] for n in (1, 2) for i in range(len(s) - n + 1)]

    vocabulary = {g for t, _ in train for g in grams(t)}
    scores = {}
    for c in sorted({label for _, label in train}):
        counts = Counter(g for t, label in train if label == c for g in grams(t))
        total = sum(counts.values()) + alpha * len(vocabulary)
        prior = math.log(sum(label == c for _, label in train) / len(train))
        scores[c] = prior + sum(math.log((counts[g] + alpha) / total)
                                for g in grams(text) if g in vocabulary)
    return scores


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_predictions_match_the_textbook_posterior(alpha):
    texts, labels = zip(*TRAIN)
    model = baseline.NaiveBayes(alpha=alpha).fit(list(texts), np.array(labels))
    queries = ["质量很好", "太差", "不喜欢这个", "好 差", "完全没见过"]
    expected = []
    for q in queries:
        scores = reference_scores(TRAIN, q, alpha)
        expected.append(max(scores, key=scores.get))
    np.testing.assert_array_equal(model.predict(queries), expected)
    for q in queries:  # the scores themselves, not only their argmax
        known = [model.index[g] for g in baseline.ngrams(q) if g in model.index]
        scores = model.log_prior + model.log_likelihood[:, known].sum(axis=1)
        np.testing.assert_allclose(scores, list(reference_scores(TRAIN, q, alpha).values()),
                                   rtol=1e-12)


def test_script_scores_a_directory_and_names_bad_lines(tmp_path, capsys):
    for split, rows in (("train", TRAIN), ("test", TRAIN[:3])):
        (tmp_path / f"toy.{split}.data").write_text(
            "".join(f"{t}\t{label}\n" for t, label in rows), encoding="utf-8")
    result = baseline.main([str(tmp_path)])
    assert result["test"] == 1.0 and "valid" not in result
    assert "test accuracy 1.0000" in capsys.readouterr().out

    (tmp_path / "toy.test.data").write_text("好\t1\n没有标签\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"toy\.test\.data:2: expected text<TAB>label"):
        baseline.main([str(tmp_path)])
    with pytest.raises(SystemExit):
        baseline.main([str(tmp_path / "missing")])
