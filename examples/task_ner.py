"""Named-entity recognition: BERT with a CRF, GlobalPointer or softmax tagging head.

Data: the CoNLL / CRF++ layout, one character (or word) a line, ``char<TAB>tag`` (the
tag is the last column; a space separates the columns when there is no tab), a blank
line between sentences, tags in BIO, IOB2 or BIOES. Sentences longer than ``--maxlen``
are split at punctuation into pieces that fit, and joined back for scoring. The score is
entity-level precision / recall / F1 over exact (start, end, type) spans, micro-averaged
(the CoNLL rule), with a table per type after every epoch. With no arguments the script
runs end to end in under a minute (30 epochs) on sample data it writes into
``examples/data/`` and a small RANDOM checkpoint under ``checkpoints/demo/``, which cannot
give real scores; with ``--train`` the default is 8 epochs.

    python examples/task_ner.py
    python examples/task_ner.py --train ../shared/data/ner_msra/msra.train.txt \\
        --valid ../shared/data/ner_msra/msra.valid.txt --head globalpointer \\
        --vocab ../shared/data/vocab/chinese_vocab.txt --random-model 4 256 4 1024 \\
        --head-context 3 --epochs 10          # each token sees its neighbours first
    python examples/task_ner.py --predict "周恩来总理在北京会见了UN代表团"
    python examples/task_ner.py --predict-file texts.txt      # JSON lines out
    python examples/task_ner.py --export exported/ner          # SavedModel, ONNX, OpenVINO
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401  (bertkit before TensorFlow, without its start-up log)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bertkit.callbacks import progress  # noqa: E402
from bertkit.config import BertConfig  # noqa: E402
from bertkit.data import DataGenerator, sequence_padding  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.tasks.spans import entity_scores, tags_to_spans  # noqa: E402
from bertkit.tasks.tagging import (CRFTaggingHead, GlobalPointerHead,  # noqa: E402
                                   SoftmaxTaggingHead)
from bertkit.tokenizers import Tokenizer  # noqa: E402
from bertkit.distribute import is_chief, predict_on_batch  # noqa: E402
from common import (RESUME_HELP, BadLine, RunEvaluator, add_checkpoint_arguments,  # noqa: E402
                    add_export_arguments, add_fine_tuning_arguments, add_logging_arguments,
                    add_run_arguments, bad_line, build_optimizer, check_encoder_inputs,
                    check_fine_tuning_arguments, claim_output_dir, decoded_lines,
                    dtype_policy, encoder_overrides, export_for_serving, load_run,
                    logging_callbacks, make_run_strategy, print_random_checkpoint_note,
                    reinitialize_blocks, run_cli, save_run_plot, train_epochs,
                    write_lines_atomically)

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_TRAIN = os.path.join(HERE, "data", "ner.train.txt")
SAMPLE_VALID = os.path.join(HERE, "data", "ner.valid.txt")
HEADS = ("crf", "globalpointer", "softmax")
SAMPLE_EPOCHS = 30  # --epochs of the no-argument run on the sample data
TAG = re.compile(r"O|[BIMES]-\S+")
# Where a long sentence may be cut: after these characters (Chinese and ASCII).
BREAKS = set("。！？；，、：!?;,:")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_arguments(p)
    p.add_argument("--train", default=None, help="training file (CoNLL layout; default: the "
                   "sample data, written on first use)")
    p.add_argument("--valid", default=None, help="validation file, scored after every epoch")
    p.add_argument("--test", default=None, help="optional test file, scored at the end with "
                   "the best weights")
    p.add_argument("--head", choices=HEADS, default="crf",
                   help="crf: IOB2 tags under a CRF (default); globalpointer: every span "
                        "scored per type (Efficient GlobalPointer); softmax: an IOB2 tag per "
                        "token on its own")
    p.add_argument("--maxlen", type=int, default=128,
                   help="tokens per piece, [CLS] and [SEP] included; longer sentences are "
                        "split at punctuation (default 128)")
    add_fine_tuning_arguments(
        p, epochs=8, lr_help="peak learning rate (default: 5e-5 for a given checkpoint, 1e-3 "
                             "for a random one)")
    p.add_argument("--crf-lr-multiplier", type=float, default=None,
                   help="the CRF transitions learn this many times faster (default: so that "
                        "they learn at 1e-2, bert4keras's 1000 x 2e-5 ... 100 x 1e-4)")
    p.add_argument("--head-size", type=int, default=64,
                   help="GlobalPointer's query/key width (default 64)")
    p.add_argument("--head-dropout", type=float, default=0.1,
                   help="dropout on the encoder's output, before the tagging head "
                        "(default 0.1)")
    p.add_argument("--head-context", type=int, default=0, metavar="WIDTH",
                   help="give each token its neighbours before the head: a width-WIDTH "
                        "convolution with a residual (odd, e.g. 3; bertkit.LocalContext). "
                        "An encoder with absolute positions learns neighbours slowly; a "
                        "random or briefly pretrained BERT tags far better with 3 "
                        "(default 0: none)")
    p.add_argument("--random-model", type=int, nargs=4, metavar=("LAYERS", "HIDDEN", "HEADS",
                   "INTERMEDIATE"), help="train a randomly initialised BERT of this size with "
                   "--vocab (no --config/--checkpoint)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip sentences with malformed lines (counted) instead of stopping")
    add_run_arguments(p, os.path.join("outputs", "ner"), resume_help=RESUME_HELP)
    add_logging_arguments(p)
    p.add_argument("--predict", nargs="+", metavar="TEXT",
                   help="print the entities of TEXTs, with character offsets, from the "
                        "weights saved in --output-dir")
    p.add_argument("--predict-file", metavar="FILE",
                   help="one text a line; print one JSON line of entities per text")
    add_export_arguments(p)
    p.add_argument("--write-train-texts", metavar="FILE",
                   help="write --train's sentences, one a line, to FILE and exit: a corpus "
                        "for examples/pretrain_mlm.py with no validation text in it")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.train is None and not any(a.startswith("--epochs") for a in argv):
        args.epochs = SAMPLE_EPOCHS  # the sample data is small: more passes, still ~1 minute
    check_fine_tuning_arguments(p, args, checkpoint_optional=bool(args.random_model))
    if args.random_model and (args.config or args.checkpoint or not args.vocab):
        p.error("--random-model takes --vocab and no --config/--checkpoint")
    if args.maxlen < 3:
        p.error("--maxlen must be at least 3 ([CLS], one token, [SEP])")
    if args.crf_lr_multiplier is not None and not args.crf_lr_multiplier > 0:
        p.error("--crf-lr-multiplier must be > 0")
    if not 0 <= args.head_dropout < 1:
        p.error("--head-dropout must be in [0, 1)")
    if args.head_context and (args.head_context < 3 or args.head_context % 2 == 0):
        p.error("--head-context must be 0 (none) or an odd width >= 3")
    if args.head_size < 2 or args.head_size % 2:
        p.error("--head-size must be an even number >= 2")
    if (args.train is None) != (args.valid is None):
        p.error("--train and --valid go together")
    return args


# -- data -------------------------------------------------------------------------------


class Sentence:
    """A labelled sentence: its ``text`` and entities as character spans ``(start, end,
    type)``, end exclusive, with where it came from (``path:line``) for messages."""

    __slots__ = ("text", "entities", "source")

    def __init__(self, text, entities, source=""):
        self.text, self.entities, self.source = text, entities, source


def parse_conll_line(line):
    """``(token, tag)`` from a ``token<TAB>...<TAB>tag`` (or space separated) line."""
    if "\t" in line:
        columns = line.split("\t")
    else:
        columns = line.strip().split()
    if len(columns) < 2:
        raise BadLine("expected 'token<TAB>tag'")
    token, tag = columns[0], columns[-1].strip()
    if not token:
        token = " "  # a space character as the token, written as an empty first column
    if not TAG.fullmatch(tag):
        raise BadLine(f"tag {tag!r} is not O, B-X, I-X, E-X, S-X or M-X")
    return token, tag


def join_tokens(tokens):
    """The sentence text and each token's character offset: characters are joined as
    they are, words (several characters, Latin) with a space between them."""
    text, offsets = "", []
    for token in tokens:
        if text and len(token) > 1 and (text[-1].isalnum() and text[-1].isascii()):
            text += " "
        offsets.append(len(text))
        text += token
    return text, offsets


def sentence_of(rows, source):
    tokens = [token for token, _ in rows]
    text, offsets = join_tokens(tokens)
    ends = [o + len(t) for o, t in zip(offsets, tokens)]
    entities = [(offsets[s], ends[e - 1], kind)
                for s, e, kind in tags_to_spans([tag for _, tag in rows])]
    return Sentence(text, entities, source)


def read_conll(path, skip_bad_lines=False):
    """The sentences of a CoNLL-layout file, with errors naming ``file:line``.

    Raises:
        FileNotFoundError, ValueError: naming the file (and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    sentences, rows, first, bad, skipped = [], [], None, False, 0

    def close():
        nonlocal rows, bad, skipped
        if rows and not bad:
            sentences.append(sentence_of(rows, f"{path}:{first}"))
        skipped += bad
        rows, bad = [], False

    for number, line, problem in decoded_lines(path):
        if line is not None:
            if not line.strip() and "\t" not in line:
                close()
                continue
            try:
                row = parse_conll_line(line)
            except BadLine as error:
                problem = error
        if problem is not None:
            if not skip_bad_lines:
                raise bad_line(path, number, problem, "the sentences that hold such lines")
            bad = True
            continue
        if not rows:
            first = number
        rows.append(row)
    close()
    if skipped:
        print(f"{path}: skipped {skipped} sentence(s) with malformed lines")
    if not sentences:
        raise ValueError(f"{path}: no sentences in this data file")
    return sentences


class Encoded:
    """A text as the model sees it: word pieces (no [CLS]/[SEP]), their ids, which
    characters each covers (``Tokenizer.rematch``) and the pieces of at most ``limit``
    tokens it is cut into."""

    __slots__ = ("text", "ids", "mapping", "pieces")

    def __init__(self, text, tokenizer, limit):
        tokens = tokenizer.tokenize(text)[1:-1]
        self.text = text
        self.ids = tokenizer.tokens_to_ids(tokens)
        self.mapping = tokenizer.rematch(text, tokens)
        self.pieces = split_points(tokens, limit)

    def token_spans(self, entities):
        """Character spans -> token spans (those that cover no token are dropped)."""
        owner = {}
        for t, chars in enumerate(self.mapping):
            for c in chars:
                owner[c] = t
        spans = []
        for start, end, kind in entities:
            tokens = [owner[c] for c in range(start, end) if c in owner]
            if tokens:
                spans.append((tokens[0], tokens[-1] + 1, kind))
        return spans

    def char_span(self, start, end):
        """Token span -> character span ``(start, end)`` of the text."""
        chars = [c for t in range(start, end) for c in self.mapping[t]]
        return (chars[0], chars[-1] + 1) if chars else None


def split_points(tokens, limit):
    """``[(start, end)]`` token ranges of at most ``limit`` tokens covering ``tokens``,
    cut after the last break (punctuation) inside each window when there is one."""
    pieces, start = [], 0
    while start < len(tokens) or not pieces:
        end = min(start + limit, len(tokens))
        if end < len(tokens):
            cuts = [i + 1 for i in range(start, end) if tokens[i] in BREAKS]
            end = cuts[-1] if cuts else end
        pieces.append((start, end))
        start = end
    return pieces


def boundary_ids(tokenizer):
    """The ids of the tokens that open and close every piece ([CLS], [SEP])."""
    return tokenizer.tokens_to_ids(tokenizer.tokenize(""))


def piece_examples(encoded, spans, head, tokenizer):
    """``(token_ids, labels)`` of each piece of an encoded sentence; entities that a cut
    splits are left out of the labels (counted by the caller)."""
    cls, sep = boundary_ids(tokenizer)
    examples, kept = [], 0
    for start, end in encoded.pieces:
        inside = [(s - start + 1, e - start + 1, k) for s, e, k in spans
                  if start <= s and e <= end]
        kept += len(inside)
        ids = [cls] + encoded.ids[start:end] + [sep]
        examples.append((ids, head.labels(inside, len(ids))))
    return examples, len(spans) - kept


class TaggingGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids), labels)``: tags padded with -1, or
    GlobalPointer's ``[N, T, T]`` span targets padded with 0."""

    def __iter__(self, random=False):
        batch = []
        for is_end, item in self.sample(random):
            batch.append(item)
            if len(batch) == self.batch_size or is_end:
                yield self.collate(batch)
                batch = []

    @staticmethod
    def collate(batch):
        token_ids = sequence_padding([ids for ids, _ in batch])
        labels = [y for _, y in batch]
        if labels[0].ndim == 1:
            labels = sequence_padding(labels, value=-1)
        else:
            length = token_ids.shape[1]
            padded = np.zeros((len(labels), labels[0].shape[0], length, length), "float32")
            for b, y in enumerate(labels):
                padded[b, :, :y.shape[1], :y.shape[2]] = y
            labels = padded
        return (token_ids, np.zeros_like(token_ids)), labels

    @staticmethod
    def signature(head):
        """``(types, shapes)`` of a batch, for ``to_dataset``."""
        if isinstance(head, GlobalPointerHead):
            label = ("float32", [None, len(head.tag_types), None, None])
        else:
            label = ("int32", [None, None])
        return (("int32", "int32"), label[0]), (([None, None], [None, None]), label[1])


# -- model ------------------------------------------------------------------------------


def build_tagger(args, tag_types, checkpoint=None):
    """The encoder (from the checkpoint when given) with the ``--head`` tagging head."""
    dtype = dtype_policy(args)
    encoder = build_transformer_model(args.config, checkpoint, model=args.model, dtype=dtype,
                                      **encoder_overrides(args))
    if checkpoint:
        reinitialize_blocks(args, encoder)
    common = dict(name="Tagger", dropout_rate=args.head_dropout,
                  context_width=args.head_context or None, dtype=dtype)
    if args.head == "crf":
        head = CRFTaggingHead(tag_types, lr_multiplier=args.crf_lr_multiplier, **common)
    elif args.head == "globalpointer":
        head = GlobalPointerHead(tag_types, head_size=args.head_size, **common)
    else:
        head = SoftmaxTaggingHead(tag_types, **common)
    return head, head.attach(encoder, name=f"ner_{args.head}")


def predict_entities(head, decoder, tokenizer, encoded_texts, batch_size=64, desc=None):
    """The entities of each encoded text, as character spans ``(start, end, type)``: every
    piece predicted (sorted by length, so batches pad little), joined back per text."""
    cls, sep = boundary_ids(tokenizer)
    pieces = [(i, start, end) for i, e in enumerate(encoded_texts) for start, end in e.pieces]
    pieces.sort(key=lambda p: p[2] - p[1])
    found = [set() for _ in encoded_texts]
    batches = [pieces[k:k + batch_size] for k in range(0, len(pieces), batch_size)]
    for batch in progress(batches, desc=desc, disable=None if desc else True):
        token_ids = sequence_padding([[cls] + encoded_texts[i].ids[s:e] + [sep]
                                      for i, s, e in batch])
        mask = (token_ids > 0).astype("float32")
        decoded = predict_on_batch(decoder, [token_ids, np.zeros_like(token_ids)])
        for (i, s, e), spans in zip(batch, head.spans(decoded, mask)):
            for start, end, kind in spans:
                if 1 <= start and end <= e - s + 1:  # not on [CLS] / [SEP]
                    span = encoded_texts[i].char_span(start - 1 + s, end - 1 + s)
                    if span:
                        found[i].add((*span, kind))
    return found


def score_table(scores):
    """The per-type table of :func:`entity_scores`, as text."""
    lines = [f"{'type':>8} {'precision':>9} {'recall':>7} {'f1':>7} {'gold':>6}"]
    for kind, s in scores.items():
        lines.append(f"{kind:>8} {s.precision:9.4f} {s.recall:7.4f} {s.f1:7.4f} {s.gold:6d}")
    return "\n".join(lines)


class EntityEvaluator(RunEvaluator):
    """Entity F1 on the validation sentences after each epoch, with a per-type table;
    commits the best weights (on the EMA weights when the optimizer keeps them)."""

    def __init__(self, head, tokenizer, sentences, encoded, run, settings):
        super().__init__(sentences, run, settings, name="val_f1", verbose=0)
        self.head, self.tokenizer = head, tokenizer
        self.sentences, self.encoded = sentences, encoded
        self.scores = self.best_scores = None

    def evaluate(self):
        predicted = predict_entities(self.head, self.head.decoder(self.model), self.tokenizer,
                                     self.encoded, desc="valid")
        self.scores = entity_scores([s.entities for s in self.sentences], predicted)
        return self.scores["all"].f1

    def on_epoch_end(self, epoch, logs=None):
        best = self.best
        super().on_epoch_end(epoch, logs)
        if self.best > best:
            self.best_scores = self.scores
        print(f"epoch {epoch + 1}: val f1 {self.scores['all'].f1:.4f} (best "
              f"{self.best:.4f})\n{score_table(self.scores)}", flush=True)


# -- commands ---------------------------------------------------------------------------


def resolve_checkpoint(args):
    """Fills in the sample data, the demo checkpoint or ``--random-model``'s config, and
    the learning rates (a random encoder has nothing to preserve: 1e-3)."""
    if args.train is None:
        if not (os.path.isfile(SAMPLE_TRAIN) and os.path.isfile(SAMPLE_VALID)):
            sys.path.insert(0, os.path.join(HERE, "data"))
            from make_sample_data import ner_files

            ner_files(os.path.dirname(SAMPLE_TRAIN))
            print(f"wrote the sample data {SAMPLE_TRAIN} and {SAMPLE_VALID}")
        args.train, args.valid = SAMPLE_TRAIN, SAMPLE_VALID
    if args.random_model:
        layers, hidden, heads, intermediate = args.random_model
        args.config = BertConfig.from_dict(dict(
            vocab_size=Tokenizer(args.vocab).vocab_size, num_hidden_layers=layers,
            hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate,
            hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2))
        print(f"NOTE: training a RANDOMLY initialised BERT ({layers} layers, hidden {hidden}).")
    elif args.checkpoint is None:
        from demo import ensure_demo_checkpoint

        args.config, args.checkpoint, args.vocab = ensure_demo_checkpoint()
        print_random_checkpoint_note("scores")
    if args.lr is None:
        args.lr = 5e-5 if args.checkpoint else 1e-3
    if args.crf_lr_multiplier is None:
        args.crf_lr_multiplier = max(1.0, 1e-2 / args.lr)


def prepare(sentences, head, tokenizer, limit, what):
    """Encodes sentences and builds the training pieces; reports what splitting did."""
    encoded = [Encoded(s.text, tokenizer, limit) for s in progress(sentences, desc=what,
                                                                    disable=None)]
    examples, dropped, lost = [], 0, 0
    for sentence, e in zip(sentences, encoded):
        spans = e.token_spans(sentence.entities)
        lost += len(sentence.entities) - len(spans)
        pieces, cut = piece_examples(e, spans, head, tokenizer)
        examples += pieces
        dropped += cut
    long = sum(len(e.pieces) > 1 for e in encoded)
    print(f"{what}: {len(sentences)} sentences, {len(examples)} pieces ({long} sentences "
          f"longer than {limit} tokens split), "
          f"{sum(len(s.entities) for s in sentences)} entities"
          + (f", {dropped} cut by a split" if dropped else "")
          + (f", {lost} on characters with no token" if lost else ""))
    return encoded, examples


def train(args):
    """Fine-tunes, keeps the best weights by validation entity F1, scores ``--test``.

    Checked before the first step: the output directory, every data line, ``--maxlen``
    and the vocabulary against the config, the checkpoint's variables and shapes.
    """
    run = claim_output_dir(args)
    # First: a multi-worker strategy must exist before TensorFlow runs anything.
    strategy = make_run_strategy(args)
    resolve_checkpoint(args)
    keras.utils.set_random_seed(args.seed)
    splits = {"train": read_conll(args.train, args.skip_bad_lines),
              "valid": read_conll(args.valid, args.skip_bad_lines)}
    if args.test:
        splits["test"] = read_conll(args.test, args.skip_bad_lines)
    tag_types = sorted({k for s in splits["train"] for _, _, k in s.entities})
    if not tag_types:
        raise ValueError(f"{args.train}: no entity in the training data (all tags are O)")
    unseen = sorted({k for s in splits["valid"] for _, _, k in s.entities} - set(tag_types))
    if unseen:
        print(f"warning: {args.valid}: entity types {unseen} never occur in training; they "
              "cannot be predicted right")
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    check_encoder_inputs(args, tokenizer)
    with strategy.scope():  # variables, the checkpoint's values and the optimizer's slots
        head, model = build_tagger(args, tag_types, args.checkpoint)
    limit = args.maxlen - 2
    _, train_examples = prepare(splits["train"], head, tokenizer, limit, "train")
    encoded = {s: prepare(splits[s], head, tokenizer, limit, s)[0]
               for s in splits if s != "train"}
    generator = TaggingGenerator(train_examples, batch_size=args.batch_size, bucket=True,
                                 seed=args.seed)
    steps = len(generator)
    with strategy.scope():
        model.compile(optimizer=build_optimizer(args, model, steps * args.epochs),
                      loss=head.loss)
    evaluator = EntityEvaluator(head, tokenizer, splits["valid"], encoded["valid"], run,
                                run_settings(args, tag_types))
    print(f"{args.head} head over {', '.join(tag_types)}; {steps} steps an epoch")
    start = time.time()
    types, shapes = TaggingGenerator.signature(head)
    history = train_epochs(args, model, generator,
                           lambda g: g.to_dataset(types, shapes, repeat=False),
                           evaluator, run, strategy, callbacks=logging_callbacks(args))
    if not is_chief(strategy):
        print("training done; the chief writes the run and scores --test")
        return {"val_f1": evaluator.best, "model": model, "head": head}
    save_run_plot(args, model, history)
    weights_path = evaluator.best_weights()
    result = {"val_f1": evaluator.best, "val_scores": evaluator.best_scores,
              "weights": weights_path, "model": model, "head": head, "tokenizer": tokenizer}
    if "test" in splits:
        model.load_weights(weights_path)
        predicted = predict_entities(head, head.decoder(model), tokenizer, encoded["test"],
                                     desc="test")
        result["test_scores"] = entity_scores([s.entities for s in splits["test"]], predicted)
        print(f"test (best weights):\n{score_table(result['test_scores'])}")
    result["minutes"] = (time.time() - start) / 60
    print(f"best val f1: {evaluator.best:.4f}" + (
        f"  test f1: {result['test_scores']['all'].f1:.4f}" if "test" in splits else "")
        + f"  ({result['minutes']:.1f} min)  weights: {weights_path}")
    return result


def run_settings(args, tag_types):
    """What ``--predict`` needs to rebuild the model (paths are stored absolute)."""
    config = args.config.to_dict() if isinstance(args.config, BertConfig) \
        else os.path.abspath(args.config)
    return {"config": config, "vocab": os.path.abspath(args.vocab), "model": args.model,
            "do_lower_case": args.do_lower_case, "maxlen": args.maxlen, "head": args.head,
            "tag_types": tag_types, "head_size": args.head_size, "head_dropout": args.head_dropout,
            "head_context": args.head_context, "crf_lr_multiplier": args.crf_lr_multiplier,
            "dropout": args.dropout, "mixed_precision": args.mixed_precision}


def read_texts(path):
    """The non-empty lines of a UTF-8 text file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--predict-file not found: {path}")
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        try:
            return [line.rstrip("\r\n") for line in f if line.strip()]
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error.reason})") from None


def load_tagger(args):
    """``(head, model, tokenizer)`` rebuilt from the run saved in ``--output-dir``, with
    its best weights (``args`` takes the run's settings)."""
    run, weights_path = load_run(args.output_dir)
    for key in ("vocab", "model", "do_lower_case", "maxlen", "head", "head_size",
                "crf_lr_multiplier", "dropout", "mixed_precision"):
        setattr(args, key, run[key])
    args.head_context = run.get("head_context", 0)  # runs saved before the option: none
    config = run["config"]
    args.config = BertConfig.from_dict(config) if isinstance(config, dict) else config
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    head, model = build_tagger(args, run["tag_types"])
    model.load_weights(weights_path)
    return head, model, tokenizer


def export(args):
    """Exports the saved tagger for serving: ``spans`` (token positions, ``type`` an index
    into ``tag_types``) and, for the CRF and softmax heads, the ``tags`` paths (Viterbi's
    in the graph)."""
    head, model, _ = load_tagger(args)
    metadata = {"task": "tagging", "head": args.head, "tag_types": head.tag_types,
                "spans": "rows (sentence, start, end, type): token positions with [CLS] at "
                         "0, end exclusive, type indexing tag_types; longer sentences are "
                         "cut into pieces of maxlen tokens by the client"}
    if hasattr(head, "tags"):
        metadata["tags"] = head.tags
    return export_for_serving(args, model, outputs=head, metadata=metadata)


def predict(args):
    """Prints each text's entities (type, character offsets, surface) from the saved
    weights: readable lines for ``--predict``, JSON lines for ``--predict-file``."""
    head, model, tokenizer = load_tagger(args)
    texts = list(args.predict or []) + (read_texts(args.predict_file)
                                        if args.predict_file else [])
    encoded = [Encoded(text, tokenizer, args.maxlen - 2) for text in texts]
    found = predict_entities(head, head.decoder(model), tokenizer, encoded)
    results = []
    for text, spans in zip(texts, found):
        entities = [{"start": s, "end": e, "type": k, "text": text[s:e]}
                    for s, e, k in sorted(spans)]
        results.append({"text": text, "entities": entities})
        if args.predict_file:
            print(json.dumps(results[-1], ensure_ascii=False))
        else:
            print(text)
            for entity in entities:
                print(f"  {entity['type']}\t{entity['start']}:{entity['end']}\t{entity['text']}")
    return results


def write_train_texts(args):
    """Writes the training sentences' texts, one a line (atomically); returns their count."""
    sentences = read_conll(args.train, args.skip_bad_lines)
    write_lines_atomically(args.write_train_texts, (s.text for s in sentences))
    print(f"{len(sentences)} training sentences written to {args.write_train_texts}")
    return len(sentences)


def main(argv=None):
    args = parse_args(argv)
    if args.write_train_texts:
        if args.train is None:
            raise ValueError("--write-train-texts needs --train (and --valid)")
        return write_train_texts(args)
    if args.export:
        return export(args)
    return predict(args) if args.predict or args.predict_file else train(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
