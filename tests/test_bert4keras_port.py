"""bert4keras's sentiment example, ported line by line, runs as bertkit code."""
import os
import subprocess
import sys

import numpy as np

from bertkit.data import DataGenerator
from conftest import REPO_ROOT


def test_forfit_passes_bert4keras_list_batches_as_tuples():
    class Lists(DataGenerator):
        def __iter__(self, random=False):
            for _, x in self.sample(random):
                yield [np.array([x]), np.array([x])], np.array([x])

    batch = next(Lists([1, 2], batch_size=1).forfit(random=False))
    assert isinstance(batch, tuple) and isinstance(batch[0], tuple)
    assert [int(a[0]) for a in batch[0]] == [1, 1]


def test_the_ported_sentiment_example_trains_on_shared_data(shared_data, tmp_path):
    data = tmp_path / "sentiment"
    data.mkdir()
    for split, lines in (("train", 64), ("valid", 32), ("test", 32)):
        with open(os.path.join(shared_data, "sentiment", f"sentiment.{split}.data"),
                  encoding="utf-8") as f:
            head = [next(f) for _ in range(lines)]
        (data / f"sentiment.{split}.data").write_text("".join(head), encoding="utf-8")
    env = dict(os.environ, SENTIMENT_DIR=str(data), ALBERT_DIR=str(tmp_path / "albert"),
               EPOCHS="1", BERTKIT_SHARED_DATA=shared_data)
    script = os.path.join(REPO_ROOT, "examples", "bert4keras_port", "task_sentiment_albert.py")
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote a RANDOM ALBERT" in done.stdout and "final test acc:" in done.stdout
    assert os.path.isfile(tmp_path / "albert" / "best_model.weights.h5")


def test_the_ported_sentiment_example_runs_a_google_bert_with_model_bert(
        shared_data, tiny_bert, tmp_path):
    _, _, prefix = tiny_bert
    bert_dir = os.path.dirname(prefix)
    with open(os.path.join(shared_data, "sentiment", "sentiment.train.data"),
              encoding="utf-8") as f:
        # 20 characters a text: the tiny checkpoint has 24 positions.
        head = ["%s\t%s" % (text[:20], label)
                for text, label in (next(f).split("\t") for _ in range(32))]
    data = tmp_path / "sentiment"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"sentiment.{split}.data").write_text("".join(head), encoding="utf-8")
    # The tiny checkpoint's 40 ids: the special tokens and the corpus's commonest characters.
    counts = {}
    for line in head:
        for char in line.split("\t")[0]:
            counts[char] = counts.get(char, 0) + 1
    chars = sorted(counts, key=lambda c: -counts[c])[:35]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    with open(os.path.join(bert_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    script = os.path.join(REPO_ROOT, "examples", "bert4keras_port", "task_sentiment_albert.py")
    env = dict(os.environ, SENTIMENT_DIR=str(data), ALBERT_DIR=bert_dir, MODEL="bert",
               EPOCHS="1", BERTKIT_SHARED_DATA=shared_data)
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RANDOM" not in done.stdout and "final test acc:" in done.stdout
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    assert os.path.isfile(os.path.join(bert_dir, "best_model.weights.h5"))

    env["ALBERT_DIR"] = str(tmp_path / "empty")
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "no checkpoint" in done.stderr and "MODEL=bert" in done.stderr
    assert not os.path.exists(tmp_path / "empty")
