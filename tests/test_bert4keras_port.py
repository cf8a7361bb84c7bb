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
