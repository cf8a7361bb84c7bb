"""Fine-tune BERT for sentence classification (the sentiment task of bert4keras).

Data: a directory with ``*.train.data``, ``*.valid.data`` and ``*.test.data``, one
``text<TAB>label`` a line, labels 0, 1, ... With no arguments the script runs end to end
in about a minute on the sample data in ``examples/data/`` and a small RANDOM
checkpoint under ``checkpoints/demo/``, which cannot give real accuracy.

    python examples/task_sentiment_classification.py
    python examples/task_sentiment_classification.py --data-dir ../shared/data/sentiment \\
        --config chinese_L-12_H-768_A-12/bert_config.json \\
        --checkpoint chinese_L-12_H-768_A-12/bert_model.ckpt \\
        --vocab chinese_L-12_H-768_A-12/vocab.txt --epochs 3 --lr 2e-5
    python examples/task_sentiment_classification.py --predict "质量很好，推荐购买"
    python examples/task_sentiment_classification.py --export exported/sentiment

Training saves its state at every epoch's end (and every ``--save-every-steps``, and on
Ctrl-C) for ``--resume``; ``--distribute mirrored|multiworker`` trains on several GPUs or
machines (see the README, and ``examples/local_cluster.py`` for workers on one machine).
"""
import argparse
import collections
import glob
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401  (bertkit before TensorFlow, without its start-up log)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bertkit.callbacks import progress  # noqa: E402
from bertkit.data import DataGenerator, sequence_padding  # noqa: E402
from bertkit.tasks.classification import ClassificationHead  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.tokenizers import Tokenizer  # noqa: E402
from bertkit.distribute import is_chief, predict_on_batch  # noqa: E402
from common import (RESUME_HELP, BadLine, RunEvaluator, add_checkpoint_arguments,  # noqa: E402
                    add_export_arguments, add_fine_tuning_arguments, add_logging_arguments,
                    add_run_arguments, build_optimizer, check_encoder_inputs,
                    check_fine_tuning_arguments, claim_output_dir, dtype_policy,
                    encoder_overrides, export_for_serving, load_run,
                    logging_callbacks, make_run_strategy, print_random_checkpoint_note,
                    read_records, reinitialize_blocks, run_cli, save_run_plot, train_epochs)

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_arguments(p)
    p.add_argument("--data-dir", default=os.path.join(HERE, "data"),
                   help="directory with *.train.data, *.valid.data, *.test.data")
    p.add_argument("--maxlen", type=int, default=128)
    add_fine_tuning_arguments(
        p, epochs=5, lr_help="peak learning rate (default: 5e-5 for a given checkpoint, 1e-3 "
                             "for the random demo checkpoint, which has nothing to preserve)")
    p.add_argument("--pooling", default="cls", choices=ClassificationHead.POOLINGS)
    p.add_argument("--classifier-dropout", type=float, default=0.1,
                   help="dropout on the pooled vector, before the classifier (default 0.1)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="number of classes (default: 1 + the largest training label, "
                        "refused if far beyond the number of distinct labels)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed data lines with a count instead of stopping")
    add_run_arguments(p, os.path.join("outputs", "sentiment"), resume_help=RESUME_HELP)
    add_logging_arguments(p, attention=True)
    p.add_argument("--predict", nargs="+", metavar="TEXT",
                   help="classify TEXTs with the weights saved in --output-dir")
    add_export_arguments(p)
    args = p.parse_args(argv)
    check_fine_tuning_arguments(p, args)
    if not 0 <= args.classifier_dropout < 1:
        p.error("--classifier-dropout must be in [0, 1)")
    if args.num_classes is not None and args.num_classes < 2:
        p.error("--num-classes must be at least 2")
    return args


# -- data -------------------------------------------------------------------------------


LABEL = re.compile(r"[0-9]+")  # ASCII digits only: '²' and '--1' are bad lines


def parse_labelled_line(line):
    """``(text, label)`` from a ``text<TAB>label`` line; raises ``BadLine``."""
    text, tab, label = line.rpartition("\t")
    if not tab:
        raise BadLine("no tab between text and label")
    if not text.strip():
        raise BadLine("empty text")
    if not LABEL.fullmatch(label.strip()):
        raise BadLine(f"label {label!r} is not a non-negative integer")
    return text, int(label)


def read_labelled_lines(path, skip_bad_lines=False, with_line_numbers=False):
    """``[(text, label)]`` from a ``text<TAB>label`` file, with errors naming file:line."""
    return read_records(path, parse_labelled_line, skip_bad_lines, with_line_numbers)


def count_classes(splits, paths, numbers, num_classes=None, limit_factor=2):
    """The classifier's number of classes, checked against the labels of every split.

    Without ``num_classes`` it is ``1 + the largest training label`` (at least 2), and
    refused when that exceeds ``limit_factor`` times the number of distinct training
    labels (a typo such as ``1000000`` would otherwise build a million-class head).
    Labels that training never shows (in its range, or in the validation and test
    files) are reported as warnings: the classifier cannot predict them.

    Raises:
        ValueError: naming the file and line of the offending label.
    """
    train_labels = [label for _, label in splits["train"]]
    seen = set(train_labels)
    if num_classes is None:
        largest = max(train_labels)
        num_classes = max(2, largest + 1)
        if num_classes > limit_factor * len(seen) and num_classes > 2:
            line = numbers["train"][train_labels.index(largest)]
            raise ValueError(
                f"{paths['train']}:{line}: label {largest} would make a {num_classes}-class "
                f"classifier, but training has {len(seen)} distinct labels; fix the label or "
                f"pass --num-classes {num_classes}")
    for (_, label), line in zip(splits["train"], numbers["train"]):
        if label >= num_classes:
            raise ValueError(f"{paths['train']}:{line}: label {label} is not below "
                             f"--num-classes {num_classes}")
    missing = sorted(set(range(num_classes)) - seen)
    if missing:
        print(f"warning: {paths['train']}: label(s) {missing[:10]} never occur in training")
    for split in ("valid", "test"):
        unseen = collections.Counter(label for _, label in splits[split] if label not in seen)
        if unseen:
            counts = ", ".join(f"label {k}: {v}" for k, v in sorted(unseen.items()))
            print(f"warning: {paths[split]}: {sum(unseen.values())} line(s) have labels "
                  f"training never shows ({counts}); they cannot be predicted right")
            if max(unseen) >= num_classes:
                print(f"warning: {paths[split]}: label {max(unseen)} is beyond the "
                      f"{num_classes} classes; --num-classes {max(unseen) + 1} gives it a "
                      "class of its own")
    return num_classes


def find_split(data_dir, split):
    """The single ``*.{split}.data`` file in ``data_dir``."""
    matches = sorted(glob.glob(os.path.join(data_dir, f"*.{split}.data")))
    if not matches:
        raise FileNotFoundError(f"no *.{split}.data file in {data_dir}")
    if len(matches) > 1:
        raise ValueError(f"several *.{split}.data files in {data_dir}: {matches}")
    return matches[0]


class SentenceGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids), labels)`` padded to the batch's longest text."""

    TYPES = (("int32", "int32"), "int32")
    SHAPES = (([None, None], [None, None]), [None])

    def __init__(self, data, tokenizer, maxlen, **kwargs):
        super().__init__(data, **kwargs)
        self.tokenizer, self.maxlen = tokenizer, maxlen

    def __iter__(self, random=False):
        token_ids, segment_ids, labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            ids, segments = self.tokenizer.encode(text, maxlen=self.maxlen)
            token_ids.append(ids)
            segment_ids.append(segments)
            labels.append(label)
            if len(token_ids) == self.batch_size or is_end:
                yield (sequence_padding(token_ids), sequence_padding(segment_ids)), np.array(labels)
                token_ids, segment_ids, labels = [], [], []


# -- model ------------------------------------------------------------------------------


def build_classifier(args, num_classes, checkpoint=None):
    """The encoder (from the checkpoint when given) with a classification head."""
    dtype = dtype_policy(args)
    encoder = build_transformer_model(args.config, checkpoint, model=args.model,
                                      with_pool=args.pooling == "pooler", dtype=dtype,
                                      **encoder_overrides(args))
    if checkpoint:
        reinitialize_blocks(args, encoder)
    head = ClassificationHead(num_classes, pooling=args.pooling,
                              dropout_rate=args.classifier_dropout, name="Classifier", dtype=dtype)
    return head.attach(encoder, name="sentiment_classifier")


def accuracy(model, generator, desc):
    """Accuracy of ``model`` over one pass of ``generator``, with a progress bar."""
    right = total = 0
    for x, y in progress(generator, desc=desc):
        pred = np.argmax(predict_on_batch(model, x), axis=-1)
        right += int((pred == y).sum())
        total += len(y)
    return right / total


# -- commands ---------------------------------------------------------------------------


def resolve_checkpoint(args):
    if args.checkpoint is None:
        from demo import ensure_demo_checkpoint

        args.config, args.checkpoint, args.vocab = ensure_demo_checkpoint()
        args.lr = 1e-3 if args.lr is None else args.lr
        print_random_checkpoint_note("accuracy")


def train(args):
    """Fine-tunes, keeps the best weights by validation accuracy, reports test accuracy.

    Everything that can be checked is checked before the first step: the output
    directory, every data line, the labels, ``--maxlen`` and the vocabulary against the
    config, the checkpoint's variables and shapes. With ``--distribute`` the model is
    built, loaded and compiled inside the strategy's scope and every replica trains on
    its slice of each global batch; with ``--resume`` training goes on from the last save.
    """
    run = claim_output_dir(args)
    # First: a multi-worker strategy must exist before TensorFlow runs anything.
    strategy = make_run_strategy(args)
    resolve_checkpoint(args)
    args.lr = 5e-5 if args.lr is None else args.lr
    keras.utils.set_random_seed(args.seed)
    paths = {s: find_split(args.data_dir, s) for s in ("train", "valid", "test")}
    splits, numbers = {}, {}
    for s, path in paths.items():
        splits[s], numbers[s] = read_labelled_lines(path, args.skip_bad_lines,
                                                    with_line_numbers=True)
    num_classes = count_classes(splits, paths, numbers, args.num_classes)
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    check_encoder_inputs(args, tokenizer)
    generators = {
        s: SentenceGenerator(items, tokenizer, args.maxlen, batch_size=args.batch_size,
                             bucket=(s == "train"), seed=args.seed if s == "train" else None)
        for s, items in splits.items()
    }
    print(f"train/valid/test: {', '.join(str(len(v)) for v in splits.values())} texts, "
          f"{num_classes} classes")

    with strategy.scope():  # variables, the checkpoint's values and the optimizer's slots
        model = build_classifier(args, num_classes, args.checkpoint)
        steps = len(generators["train"])
        model.compile(optimizer=build_optimizer(args, model, steps * args.epochs),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    evaluator = RunEvaluator(generators["valid"], run, run_settings(args, num_classes),
                             name="val_accuracy")

    start = time.time()
    # One validation sentence whose attention --log-dir and --plot show.
    text = splits["valid"][0][0]
    ids, segments = tokenizer.encode(text, maxlen=args.maxlen)
    sentence = [np.array([ids]), np.array([segments])]
    # tf.data with a [batch, length] signature: any padded length, one trace, prefetching.
    history = train_epochs(
        args, model, generators["train"],
        lambda g: g.to_dataset(SentenceGenerator.TYPES, SentenceGenerator.SHAPES, repeat=False),
        evaluator, run, strategy, callbacks=logging_callbacks(args, sentence))
    if not is_chief(strategy):
        print("training done; the chief writes the run and scores the test split")
        return {"val_accuracy": evaluator.best, "model": model}
    save_run_plot(args, model, history, sentence, tokenizer.ids_to_tokens(ids))
    weights_path = evaluator.best_weights()
    model.load_weights(weights_path)
    test_accuracy = accuracy(model, generators["test"], desc="test")
    minutes = (time.time() - start) / 60
    print(f"best val_accuracy: {evaluator.best:.4f}  test accuracy: {test_accuracy:.4f}  "
          f"({minutes:.1f} min)  weights: {weights_path}")
    return {"val_accuracy": evaluator.best, "test_accuracy": test_accuracy, "minutes": minutes,
            "model": model, "tokenizer": tokenizer, "weights": weights_path}


def run_settings(args, num_classes):
    """What ``--predict`` needs to rebuild the model (paths are stored absolute)."""
    return {"config": os.path.abspath(args.config), "vocab": os.path.abspath(args.vocab),
            "model": args.model, "do_lower_case": args.do_lower_case, "maxlen": args.maxlen,
            "pooling": args.pooling, "dropout": args.dropout,
            "classifier_dropout": args.classifier_dropout, "num_classes": num_classes}


def load_classifier(args):
    """``(model, tokenizer)`` rebuilt from the run saved in ``--output-dir``, with its best
    weights (``args`` takes the run's settings)."""
    run, weights_path = load_run(args.output_dir)
    for key in ("config", "vocab", "model", "do_lower_case", "maxlen", "pooling"):
        setattr(args, key, run[key])
    # Dropout is inactive at inference; the rates only rebuild the same layers.
    args.dropout = run.get("dropout")
    args.classifier_dropout = run.get("classifier_dropout", 0.1)
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    model = build_classifier(args, run["num_classes"])
    model.load_weights(weights_path)
    return model, tokenizer


def export(args):
    """Exports the saved classifier for serving (``probabilities`` and ``label``)."""
    model, _ = load_classifier(args)
    return export_for_serving(args, model, outputs=model.get_layer("Classifier"),
                              metadata={"task": "classification",
                                        "num_classes": model.output.shape[-1]})


def predict(args):
    """Prints the label and its probability for each text, from the saved weights."""
    model, tokenizer = load_classifier(args)
    encoded = [tokenizer.encode(text, maxlen=args.maxlen) for text in args.predict]
    token_ids = sequence_padding([ids for ids, _ in encoded])
    segment_ids = sequence_padding([segments for _, segments in encoded])
    probs = model.predict([token_ids, segment_ids], verbose=0)
    results = []
    for text, p in zip(args.predict, probs):
        label = int(np.argmax(p))
        results.append((text, label, float(p[label])))
        print(f"{label}\t{p[label]:.4f}\t{text}")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.export:
        return export(args)
    return predict(args) if args.predict else train(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
