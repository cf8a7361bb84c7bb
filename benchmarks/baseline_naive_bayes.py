"""The floor any BERT result is read against: naive Bayes on character 1- and 2-grams.

Multinomial naive Bayes with Laplace (add-one) smoothing over the character unigrams
and bigrams of each text, trained on ``*.train.data`` and scored on ``*.test.data``
(and ``*.valid.data`` when present) of a directory of ``text<TAB>label`` files. Pure
numpy; prints the accuracies and the wall time.

    python benchmarks/baseline_naive_bayes.py ../shared/data/sentiment
"""
import argparse
import glob
import os
import time

import numpy as np


def read_split(data_dir, split):
    """``(texts, labels)`` of the single ``*.{split}.data`` file, or None if absent."""
    paths = sorted(glob.glob(os.path.join(data_dir, f"*.{split}.data")))
    if not paths:
        return None
    if len(paths) > 1:
        raise ValueError(f"several *.{split}.data files in {data_dir}: {paths}")
    texts, labels = [], []
    with open(paths[0], encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, tab, label = line.rpartition("\t")
            if not tab or not label.strip().isdigit():
                raise ValueError(f"{paths[0]}:{number}: expected text<TAB>label")
            texts.append(text)
            labels.append(int(label))
    return texts, np.asarray(labels)


def ngrams(text, orders=(1, 2)):
    """The character n-grams of ``text`` for each order (whitespace removed)."""
    text = "".join(text.split())
    return [text[i:i + n] for n in orders for i in range(len(text) - n + 1)]


class NaiveBayes:
    """Multinomial naive Bayes over n-gram counts with add-``alpha`` smoothing.

    Example:

    >>> nb = NaiveBayes().fit(["好看", "难看"], np.array([1, 0]))
    >>> nb.predict(["很好看"])
    array([1])
    """

    def __init__(self, alpha=1.0, orders=(1, 2)):
        self.alpha, self.orders = alpha, orders

    def fit(self, texts, labels):
        self.classes = np.unique(labels)
        self.index = {}
        rows, cols = [], []
        for row, text in enumerate(texts):
            for gram in ngrams(text, self.orders):
                rows.append(row)
                cols.append(self.index.setdefault(gram, len(self.index)))
        class_of = np.searchsorted(self.classes, labels)
        counts = np.zeros((len(self.classes), len(self.index)))
        np.add.at(counts, (class_of[np.asarray(rows, dtype=int)], np.asarray(cols, dtype=int)), 1)
        smoothed = counts + self.alpha
        self.log_likelihood = np.log(smoothed / smoothed.sum(axis=1, keepdims=True))  # [C, V]
        self.log_prior = np.log(np.bincount(class_of, minlength=len(self.classes)) / len(labels))
        return self

    def predict(self, texts):
        scores = np.tile(self.log_prior, (len(texts), 1))  # [N, C]
        for row, text in enumerate(texts):
            # n-grams never seen in training carry no evidence either way
            known = [self.index[g] for g in ngrams(text, self.orders) if g in self.index]
            if known:
                scores[row] += self.log_likelihood[:, known].sum(axis=1)
        return self.classes[np.argmax(scores, axis=1)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_dir", help="directory with *.train.data and *.test.data")
    p.add_argument("--alpha", type=float, default=1.0, help="Laplace smoothing")
    args = p.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        p.error(f"data directory not found: {args.data_dir}")
    start = time.time()
    train = read_split(args.data_dir, "train")
    test = read_split(args.data_dir, "test")
    if train is None or test is None:
        p.error(f"{args.data_dir} needs a *.train.data and a *.test.data file")
    model = NaiveBayes(alpha=args.alpha).fit(*train)
    results = {}
    for split in ("valid", "test"):
        data = read_split(args.data_dir, split)
        if data is not None:
            results[split] = float(np.mean(model.predict(data[0]) == data[1]))
    seconds = time.time() - start
    scores = "  ".join(f"{split} accuracy {acc:.4f}" for split, acc in results.items())
    print(f"naive Bayes, character 1+2-grams, {len(train[0])} training texts, "
          f"{len(model.index)} n-grams: {scores}  ({seconds:.1f} s)")
    return dict(results, seconds=seconds)


if __name__ == "__main__":
    main()
