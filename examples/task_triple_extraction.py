"""Extract (subject, predicate, object) triples with BERT, "half pointer, half tagging".

Data in the LIC2019 / DuIE format: one JSON object a line, ``{"text": ...,
"spo_list": [{"subject": ..., "predicate": ..., "object": ...}, ...]}``, and a schema
file with one ``{"predicate": ...}`` a line. The model and decoding live in
``bertkit.tasks.triples``. With no arguments the script runs end to end in about a minute
on the sample data in ``examples/data/`` and a small RANDOM checkpoint under
``checkpoints/demo/``, which cannot give real scores.

    python examples/task_triple_extraction.py
    python examples/task_triple_extraction.py --train ../shared/data/spo_plants/train_data.json \\
        --valid-split 0.1 --schema ../shared/data/spo_plants/schemas.jsonl \\
        --config chinese_L-12_H-768_A-12/bert_config.json \\
        --checkpoint chinese_L-12_H-768_A-12/bert_model.ckpt \\
        --vocab chinese_L-12_H-768_A-12/vocab.txt --epochs 20 --lr 2e-5
    python examples/task_triple_extraction.py --predict "银杏又名香雪，原产于云南。"
    python examples/task_triple_extraction.py --export exported/triples  # subjects/, objects/

Without a pretrained checkpoint, ``--random-model 4,256,4,1024 --vocab vocab.txt``
trains a randomly initialised BERT of that size (layers, hidden, heads, intermediate).
On the plant triples of the shared data (1896 texts, 90/10 split), this run reached
validation precision 0.767, recall 0.675, F1 0.718 in 22 minutes on 2 CPU cores; without
``--swap-subjects`` (40 epochs) F1 was 0.553, held back by unseen plant names:

    python examples/task_triple_extraction.py --train ../shared/data/spo_plants/train_data.json \
        --valid-split 0.1 --schema ../shared/data/spo_plants/schemas.jsonl \
        --vocab ../shared/data/vocab/chinese_vocab.txt --random-model 4,256,4,1024 \
        --maxlen 256 --epochs 60 --lr 1e-3 --ema 0.99 --swap-subjects 0.5

Evaluation is the LIC2019 rule: exact (subject, predicate, object) matches, compared
per text as sets; the gold side keeps every annotated triple, also those training had
to skip, so the score is not flattered.
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401  (bertkit before TensorFlow, without its start-up log)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bertkit.config import BertConfig  # noqa: E402
from bertkit.data import DataGenerator, sequence_padding  # noqa: E402
from bertkit.tasks.triples import (TripleExtractor, object_labels, sample_subject,  # noqa: E402
                                subject_labels, token_span, triple_scores)
from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.tokenizers import Tokenizer  # noqa: E402
from bertkit.distribute import is_chief  # noqa: E402
from common import (RESUME_HELP, BadLine, RunEvaluator, add_checkpoint_arguments,  # noqa: E402
                    add_export_arguments, add_fine_tuning_arguments, add_logging_arguments,
                    add_run_arguments, build_optimizer, check_encoder_inputs,
                    check_fine_tuning_arguments, claim_output_dir, dtype_policy,
                    encoder_overrides, export_for_serving, load_run, logging_callbacks,
                    make_run_strategy, print_random_checkpoint_note, read_records,
                    reinitialize_blocks, run_cli, save_run_plot, train_epochs,
                    write_lines_atomically)

HERE = os.path.dirname(os.path.abspath(__file__))
PREDICTIONS_FILE = "valid_predictions.jsonl"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_arguments(p)
    p.add_argument("--random-model", metavar="L,H,A,I",
                   help="no checkpoint: a random BERT with L layers, hidden size H, A heads "
                        "and intermediate size I, on --vocab")
    p.add_argument("--train", default=os.path.join(HERE, "data", "spo.train.json"))
    p.add_argument("--valid", default=os.path.join(HERE, "data", "spo.valid.json"))
    p.add_argument("--schema", default=os.path.join(HERE, "data", "spo.schema.json"),
                   help="one JSON object with a 'predicate' a line")
    p.add_argument("--valid-split", type=float, default=None, metavar="FRACTION",
                   help="hold out FRACTION of --train (shuffled with --split-seed) as "
                        "validation instead of reading --valid")
    p.add_argument("--split-seed", type=int, default=42,
                   help="seed of --valid-split's shuffle, apart from --seed so that another "
                        "training seed keeps the same validation texts")
    p.add_argument("--write-train-texts", metavar="FILE",
                   help="write the training texts (after --valid-split), one a line, to FILE "
                        "and exit: a corpus for examples/pretrain_mlm.py with no validation "
                        "text in it")
    p.add_argument("--maxlen", type=int, default=128, help="tokens per text; longer texts "
                   "are truncated (and counted)")
    add_fine_tuning_arguments(
        p, epochs=20, lr_help="peak learning rate (default: 5e-5 from a pretrained "
                              "checkpoint, 1e-3 from a random one, the demo's or "
                              "--random-model's)")
    p.add_argument("--swap-subjects", type=float, default=0.0, metavar="PROB",
                   help="rename a text's subject after another training subject with this "
                        "probability (augmentation for small data; 0: off)")
    p.add_argument("--start-threshold", type=float, default=0.6,
                   help="a span starts where its start probability exceeds this")
    p.add_argument("--end-threshold", type=float, default=0.5,
                   help="a span ends where its end probability exceeds this")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed data lines with a count instead of stopping")
    add_run_arguments(p, os.path.join("outputs", "triples"), resume_help=RESUME_HELP)
    add_logging_arguments(p)
    p.add_argument("--predict", nargs="+", metavar="TEXT",
                   help="print the triples of TEXTs as JSON, from the weights saved in "
                        "--output-dir")
    add_export_arguments(p)
    return check_args(p, p.parse_args(argv))


def check_args(parser, args):
    """Argument combinations and ranges argparse cannot express."""
    check_fine_tuning_arguments(parser, args, checkpoint_optional=bool(args.random_model))
    if args.random_model:
        if args.config or args.checkpoint or not args.vocab:
            parser.error("--random-model needs --vocab and excludes --config/--checkpoint")
        sizes = args.random_model.split(",")
        if len(sizes) != 4 or not all(s.strip().isdigit() and int(s) > 0 for s in sizes):
            parser.error(f"--random-model must be four positive ints L,H,A,I, got "
                         f"{args.random_model!r}")
        args.random_model = [int(s) for s in sizes]
        if args.reinit_top_blocks:
            parser.error("--reinit-top-blocks applies to a checkpoint; a --random-model "
                         "starts afresh already")
    if not 0 <= args.swap_subjects <= 1:
        parser.error("--swap-subjects must be in [0, 1]")
    if args.valid_split is not None and not 0 < args.valid_split < 1:
        parser.error("--valid-split must be in (0, 1)")
    return args


# -- data -------------------------------------------------------------------------------


def read_schema(path):
    """The predicate names of a schema file (one JSON object a line), in file order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"schema file not found: {path}")
    predicates = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                predicate = json.loads(line)["predicate"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}:{number}: expected a JSON object with a "
                                 "'predicate'") from None
            if predicate not in predicates:
                predicates.append(predicate)
    if not predicates:
        raise ValueError(f"{path}: no predicates")
    return predicates


def parse_spo_line(line):
    """``{'text', 'spo_list': [(s, p, o)]}`` from one data line, or a problem string."""
    try:
        item = json.loads(line)
    except ValueError as e:
        return f"invalid JSON ({e.msg})"
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) \
            or not item["text"].strip():
        return "no non-empty 'text'"
    spo_list = item.get("spo_list", [])
    if not isinstance(spo_list, list):
        return "'spo_list' is not a list"
    triples = []
    for spo in spo_list:
        if not isinstance(spo, dict) or not all(
                isinstance(spo.get(k), str) for k in ("subject", "predicate", "object")):
            return "an 'spo_list' entry lacks a str subject, predicate or object"
        triples.append((spo["subject"], spo["predicate"], spo["object"]))
    return {"text": item["text"], "spo_list": triples}


def read_spo_lines(path, skip_bad_lines=False):
    """The items of a LIC2019/DuIE file, with errors naming file:line."""
    def parse(line):
        item = parse_spo_line(line)
        if isinstance(item, str):
            raise BadLine(item)
        return item

    return read_records(path, parse, skip_bad_lines)


def split_items(items, fraction, seed):
    """``(train, valid)``: a seeded shuffle of ``items`` cut at ``fraction``."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = max(1, round(len(items) * fraction))
    return [items[i] for i in order[cut:]], [items[i] for i in order[:cut]]


def prepare_examples(items, tokenizer, maxlen, predicates):
    """Token ids and gold token spans ``{subject: [(p, start, end)]}`` of each text.

    Gold triples that cannot be placed are skipped and counted: subject or object not
    in the text verbatim, cut off by ``maxlen``, not on token boundaries, predicate not
    in the schema. Texts left without any triple are dropped (texts annotated with
    none are kept, as negatives).

    Returns:
        ``(examples, counts)``; an example is ``(token_ids, spans, text, triples)``,
        ``triples`` being the gold triples that were placed.
    """
    index = {p: i for i, p in enumerate(predicates)}
    counts = dict.fromkeys(["truncated texts", "not in text", "cut by maxlen",
                            "not on token boundaries", "unknown predicate",
                            "dropped texts"], 0)
    examples = []
    for item in items:
        token_ids, spans, placed, reasons = place_triples(item["text"], item["spo_list"],
                                                          tokenizer, maxlen, index)
        counts["truncated texts"] += "truncated" in reasons
        for reason in reasons:
            if reason != "truncated":
                counts[reason] += 1
        if item["spo_list"] and not spans:
            counts["dropped texts"] += 1
            continue
        examples.append((token_ids, spans, item["text"], placed))
    return examples, counts


def place_triples(text, triples, tokenizer, maxlen, index):
    """Tokenizes ``text`` and places its gold triples on token spans.

    Returns:
        ``(token_ids, spans, placed triples, reasons)``, ``reasons`` listing
        ``'truncated'`` for a cut text and why each skipped triple was skipped.
    """
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    mapping = tokenizer.rematch(text, tokens)
    full = None
    reasons = []
    if len(tokens) < len(tokenizer.tokenize(text)):
        reasons.append("truncated")
        full = tokenizer.rematch(text, tokenizer.tokenize(text))
    spans, placed = {}, []
    for s, p, o in triples:
        reason = _place_triple(text, mapping, s, p, o, index, spans)
        if reason == "not on token boundaries" and full is not None \
                and token_span(text, full, s) and token_span(text, full, o):
            reason = "cut by maxlen"
        if reason:
            reasons.append(reason)
        else:
            placed.append((s, p, o))
    return tokenizer.tokens_to_ids(tokens), spans, placed, reasons


def _place_triple(text, mapping, s, p, o, index, spans):
    """Adds one gold triple to ``spans``; returns why it could not, or None."""
    if p not in index:
        return "unknown predicate"
    if s not in text or o not in text:
        return "not in text"
    subject, obj = token_span(text, mapping, s), token_span(text, mapping, o)
    if subject is None or obj is None:
        return "not on token boundaries"
    objects = spans.setdefault(subject, [])
    if (index[p], *obj) not in objects:
        objects.append((index[p], *obj))
    return None


def swap_subject(text, triples, new_subject):
    """``text`` and ``triples`` with their one subject renamed ``new_subject`` everywhere."""
    old = triples[0][0]
    return text.replace(old, new_subject), [
        (new_subject, p, o.replace(old, new_subject)) for _, p, o in triples]


class TripleGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids, subject_ids), (subject_labels, object_labels),
    (mask, mask))``, one sampled gold subject per text (``sample_subject``).

    With ``swap_subjects=q``, a text with a single subject has it renamed, with
    probability ``q``, after the subject of another training text (in the text and its
    triples), so that subjects are learnt from their context more than by name.
    """

    def __init__(self, examples, predicates, tokenizer=None, maxlen=None, swap_subjects=0.0,
                 **kwargs):
        super().__init__(examples, **kwargs)
        self.index = {p: i for i, p in enumerate(predicates)}
        self.tokenizer, self.maxlen, self.swap_subjects = tokenizer, maxlen, swap_subjects
        self.subjects = sorted({t[0] for *_, triples in examples for t in triples})

    def __iter__(self, random=False):
        batch = []
        for is_end, example in self.sample(random):
            token_ids, spans = self.maybe_swap(example) if random else example[:2]
            length = len(token_ids)
            # A text annotated with no triple still trains the subject pointer.
            subject = sample_subject(list(spans), self.random_state) if spans else (0, 0)
            batch.append((token_ids, subject_labels(length, spans), subject,
                          object_labels(length, len(self.index), spans.get(subject, []))))
            if len(batch) == self.batch_size or is_end:
                yield self.collate(batch)
                batch = []

    def maybe_swap(self, example):
        """``(token_ids, spans)`` of the example, its subject renamed now and then."""
        token_ids, spans, text, triples = example
        if len(spans) != 1 or not self.swap_subjects \
                or self.random_state.random_sample() >= self.swap_subjects:
            return token_ids, spans
        new_subject = self.subjects[self.random_state.randint(len(self.subjects))]
        text, triples = swap_subject(text, triples, new_subject)
        new_ids, new_spans, _, _ = place_triples(text, triples, self.tokenizer, self.maxlen,
                                                 self.index)
        return (new_ids, new_spans) if new_spans else (token_ids, spans)

    @staticmethod
    def collate(batch):
        token_ids, subjects, subject_ids, objects = zip(*batch)
        token_ids = sequence_padding(token_ids)
        mask = (token_ids > 0).astype("float32")
        # Tuples, not lists: Keras reads the structure of generator batches from them.
        x = (token_ids, np.zeros_like(token_ids), np.array(subject_ids, dtype="int32"))
        y = (sequence_padding(subjects), sequence_padding(objects))
        return x, y, (mask, mask)


# -- model ------------------------------------------------------------------------------


def build_extractor(args, predicates, checkpoint=None):
    """The encoder (from the checkpoint when given) with the two pointer heads."""
    dtype = dtype_policy(args)
    encoder = build_transformer_model(args.config, checkpoint, model=args.model, dtype=dtype,
                                      **encoder_overrides(args))
    if checkpoint:
        reinitialize_blocks(args, encoder)
    return TripleExtractor(encoder, predicates, dtype=dtype)


def evaluate(extractor, tokenizer, items, args):
    """LIC2019 scores on ``items`` and one record per text, gold and predicted side by side."""
    texts = [item["text"] for item in items]
    predicted = extractor.extract(texts, tokenizer, maxlen=args.maxlen,
                                  batch_size=args.batch_size,
                                  start_threshold=args.start_threshold,
                                  end_threshold=args.end_threshold)
    gold = [item["spo_list"] for item in items]
    records = []
    for text, g, p in zip(texts, gold, predicted):
        g_set, p_set = set(g), {t[:3] for t in p}
        records.append({"text": text, "gold": [list(t) for t in g],
                        "predicted": [triple_json(t) for t in p],
                        "missed": [list(t) for t in g if t not in p_set],
                        "wrong": [list(t[:3]) for t in p if t[:3] not in g_set]})
    return triple_scores(gold, predicted), records


def triple_json(triple):
    """A ``Triple`` as a JSON-ready dict."""
    return {"subject": triple.subject, "predicate": triple.predicate, "object": triple.object,
            "subject_span": list(triple.subject_span), "object_span": list(triple.object_span)}


class TripleEvaluator(RunEvaluator):
    """Validation F1 after each epoch; commits the best weights with their predictions.

    Scored, saved and written on the EMA weights when the optimizer keeps them.
    """

    def __init__(self, extractor, tokenizer, items, args, run, settings):
        super().__init__(items, run, settings, name="val_f1", verbose=0)
        self.extractor, self.tokenizer, self.items, self.args = extractor, tokenizer, items, args
        self.scores = self.best_scores = None

    def evaluate(self):
        self.scores, self.records = evaluate(self.extractor, self.tokenizer, self.items,
                                             self.args)
        return self.scores["f1"]

    def extra_files(self):
        records = self.records
        return {"predictions": (PREDICTIONS_FILE, lambda path: write_jsonl(path, records))}

    def on_epoch_end(self, epoch, logs=None):
        best = self.best
        super().on_epoch_end(epoch, logs)
        if self.best > best:
            self.best_scores = self.scores
        s = self.scores
        print(f"val precision {s['precision']:.4f} recall {s['recall']:.4f} f1 {s['f1']:.4f} "
              f"(best f1 {self.best:.4f})", flush=True)


def write_jsonl(path, records):
    """Writes ``records`` as JSON lines, atomically."""
    write_lines_atomically(path, (json.dumps(r, ensure_ascii=False) for r in records))


# -- commands ---------------------------------------------------------------------------


def resolve_checkpoint(args):
    """Fills in the demo checkpoint, or the config of ``--random-model`` (a ``BertConfig``
    that the run's manifest stores with the weights); picks the default learning rate
    for pretrained or random weights."""
    if args.lr is None:
        args.lr = 5e-5 if args.checkpoint else 1e-3
    if args.random_model:
        layers, hidden, heads, intermediate = args.random_model
        vocab_size = Tokenizer(args.vocab).vocab_size
        config = BertConfig.from_dict(dict(
            vocab_size=vocab_size, num_hidden_layers=layers, hidden_size=hidden,
            num_attention_heads=heads, intermediate_size=intermediate, hidden_act="gelu",
            max_position_embeddings=512, type_vocab_size=2))
        args.config = config
        print(f"NOTE: training a RANDOMLY initialised BERT ({layers} layers, hidden {hidden}).")
    elif args.checkpoint is None:
        from demo import ensure_demo_checkpoint

        args.config, args.checkpoint, args.vocab = ensure_demo_checkpoint()
        print_random_checkpoint_note("scores")


def load_splits(args):
    """``(train items, valid items)`` from --train and --valid or --valid-split."""
    train_items = read_spo_lines(args.train, args.skip_bad_lines)
    if args.valid_split is not None:
        return split_items(train_items, args.valid_split, args.split_seed)
    return train_items, read_spo_lines(args.valid, args.skip_bad_lines)


def train(args):
    """Trains, keeps the best weights by validation F1, writes their predictions.

    The output directory, the data, ``--maxlen`` and the vocabulary are checked before
    any work.
    """
    run = claim_output_dir(args)
    # First: a multi-worker strategy must exist before TensorFlow runs anything.
    strategy = make_run_strategy(args)
    predicates = read_schema(args.schema)
    train_items, valid_items = load_splits(args)
    resolve_checkpoint(args)
    keras.utils.set_random_seed(args.seed)
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    check_encoder_inputs(args, tokenizer)
    examples, counts = prepare_examples(train_items, tokenizer, args.maxlen, predicates)
    print(f"train/valid: {len(train_items)}/{len(valid_items)} texts, {len(predicates)} "
          f"predicates; training texts kept: {len(examples)}; skipped gold triples and "
          f"texts: {json.dumps(counts, ensure_ascii=False)}")
    generator = TripleGenerator(examples, predicates, tokenizer, args.maxlen,
                                swap_subjects=args.swap_subjects, batch_size=args.batch_size,
                                bucket=True, seed=args.seed)

    steps = len(generator)
    with strategy.scope():  # variables, the checkpoint's values and the optimizer's slots
        extractor = build_extractor(args, predicates, args.checkpoint)
        extractor.compile(build_optimizer(args, extractor.model, steps * args.epochs))
    evaluator = TripleEvaluator(extractor, tokenizer, valid_items, args, run,
                                run_settings(args, predicates))

    start = time.time()
    # Batch signatures read from the first batch, every axis of unknown size.
    history = train_epochs(args, extractor.model, generator,
                           lambda g: g.to_dataset(repeat=False), evaluator, run, strategy,
                           callbacks=logging_callbacks(args))
    if not is_chief(strategy):
        print("training done; the chief writes the run")
        return {"f1": evaluator.best}
    save_run_plot(args, extractor.model, history)
    minutes = (time.time() - start) / 60
    best = evaluator.best_scores
    paths = {role: run.file(role) for role in ("weights", "predictions")}
    if best is None:  # resumed, and no epoch since beat the interrupted run's best
        best = {"f1": evaluator.best}
        print(f"best val f1 {best['f1']:.4f}, reached before the interruption")
    else:
        print(f"best val precision {best['precision']:.4f} recall {best['recall']:.4f} "
              f"f1 {best['f1']:.4f} ({best['correct']}/{best['predicted']} predicted, "
              f"{best['gold']} gold)")
    print(f"({minutes:.1f} min)  weights: {paths['weights']}  predictions: "
          f"{paths['predictions']}")
    return dict(best, minutes=minutes, **paths)


def run_settings(args, predicates):
    """What ``--predict`` needs to rebuild the model (paths are stored absolute; the
    config of ``--random-model`` is stored itself)."""
    config = args.config.to_dict() if isinstance(args.config, BertConfig) \
        else os.path.abspath(args.config)
    return {"config": config, "vocab": os.path.abspath(args.vocab),
            "model": args.model, "do_lower_case": args.do_lower_case, "maxlen": args.maxlen,
            "dropout": args.dropout, "predicates": predicates,
            "start_threshold": args.start_threshold, "end_threshold": args.end_threshold}


def load_extractor(args):
    """``(extractor, tokenizer)`` rebuilt from the run saved in ``--output-dir``, with its
    best weights (``args`` takes the run's settings)."""
    run, weights_path = load_run(args.output_dir)
    for key in ("config", "vocab", "model", "do_lower_case", "maxlen", "dropout",
                "start_threshold", "end_threshold"):
        setattr(args, key, run[key])
    if isinstance(args.config, dict):  # a --random-model run
        args.config = BertConfig.from_dict(args.config)
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    extractor = build_extractor(args, run["predicates"])
    extractor.model.load_weights(weights_path)
    return extractor, tokenizer


def export(args):
    """Exports the extractor's two steps for serving, into ``--export``'s ``subjects/``
    (the encoder and the subject pointers, run once a text) and ``objects/`` (the object
    pointers of one subject, from the first step's ``hidden``)."""
    extractor, _ = load_extractor(args)
    shared = {"task": "triples", "predicates": extractor.predicates,
              "start_threshold": args.start_threshold, "end_threshold": args.end_threshold}
    subjects = export_for_serving(
        args, extractor.subject_model, ["subject_probabilities", "hidden"],
        {**shared, "subject_probabilities": "[B, T, 2]: start and end probability per "
                                            "token; pair each start with the nearest end"},
        directory=os.path.join(args.export, "subjects"))
    objects = export_for_serving(
        args, extractor.object_model, ["object_probabilities"],
        {**shared, "Input-Subject": "[B, 2]: the subject's start and end token, inclusive",
         "object_probabilities": "[B, T, P, 2]: start and end probability per token and "
                                 "predicate"},
        directory=os.path.join(args.export, "objects"))
    return {"subjects": subjects, "objects": objects}


def predict(args):
    """Prints one JSON line of triples per text, from the saved weights."""
    extractor, tokenizer = load_extractor(args)
    truncated = sum(len(tokenizer.tokenize(t)) > args.maxlen for t in args.predict)
    if truncated:
        print(f"NOTE: {truncated} text(s) longer than maxlen={args.maxlen} tokens were "
              "truncated; triples in the cut part are not found", file=sys.stderr)
    results = extractor.extract(args.predict, tokenizer, maxlen=args.maxlen,
                                start_threshold=args.start_threshold,
                                end_threshold=args.end_threshold)
    for text, triples in zip(args.predict, results):
        print(json.dumps({"text": text, "spo_list": [triple_json(t) for t in triples]},
                         ensure_ascii=False))
    return results


def write_train_texts(args):
    """Writes the training split's texts, one a line (atomically); returns their count."""
    train_items, _ = load_splits(args)
    write_lines_atomically(args.write_train_texts,
                           (" ".join(item["text"].splitlines()) for item in train_items))
    print(f"{len(train_items)} training texts written to {args.write_train_texts}")
    return len(train_items)


def main(argv=None):
    args = parse_args(argv)
    if args.write_train_texts:
        return write_train_texts(args)
    if args.export:
        return export(args)
    return predict(args) if args.predict else train(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
