"""Pretrain a BERT with the masked-language-model objective on raw text.

Texts are packed into full sequences of ``--maxlen`` tokens and masked afresh every
epoch (15% of the tokens: 80% ``[MASK]``, 10% random, 10% kept); the loss is computed
on the masked positions only (``bertkit.tasks.pretraining``). The result is a Google-format
directory (``bert_config.json``, ``bert_model.ckpt.*`` with the MLM head,
``vocab.txt``) that every example takes with ``--config/--checkpoint/--vocab``. With
no arguments it runs for about a minute on the sample texts in ``examples/data/``.

    python examples/pretrain_mlm.py
    python examples/pretrain_mlm.py --corpus ../shared/data/pretrain_zh/shopping_reviews.tsv \\
        --vocab ../shared/data/vocab/chinese_vocab.txt --epochs 3 --minutes 60 \\
        --output-dir checkpoints/pretrained_zh
    python examples/pretrain_mlm.py --resume --output-dir checkpoints/pretrained_zh ...
    python examples/pretrain_mlm.py --output-dir checkpoints/pretrained_zh --export exported/encoder
    python examples/pretrain_mlm.py --corpus new_texts.txt --init-checkpoint \\
        chinese_L-12_H-768_A-12/bert_model.ckpt --config chinese_L-12_H-768_A-12/bert_config.json \\
        --vocab chinese_L-12_H-768_A-12/vocab.txt --lr 5e-5

Corpus files: plain text with one document a line; ``.tsv`` files take the column
``--text-column`` (default: the last); ``.data`` files (``text<TAB>label``) take the
text; ``.json``/``.jsonl`` files take each line's ``"text"``. A text found twice (in
two files, say) is used once; blank and duplicate lines are counted, not silently
dropped. ``--repeat`` up-weights a file: ``--corpus reviews.tsv task_texts.txt
--repeat 1 8`` packs every training text of the second file eight times an epoch
(each copy in its own place of the shuffled order), which adapts the model to a small
in-domain task corpus (``task_triple_extraction.py --valid-split 0.1 --write-train-texts
task_texts.txt`` writes the triple task's training split, without its validation texts).
``--total-steps`` sets the length of the run, and with it the
learning-rate schedule, independently of the epochs; ``--fit-schedule`` sets it from
the measured speed instead (after the first steps, and again every epoch), so that the
schedule ends within ``--minutes`` whatever the machine. Interrupted runs continue
with ``--resume`` from the last save (weights, optimizer state, step): the batches and
masks of every step derive from ``--seed``, so with dropout off (the default) a resumed
run ends with the same weights as an uninterrupted one. ``--minutes`` counts from each
start.

Short sequences first: a small model learns to read its neighbours (and leaves the
early plateau where it predicts the unigram distribution) far sooner on 64-token
sequences than on 128 or 256. Under a short budget, spend the first part on
``--maxlen 64`` (with twice the ``--batch-size``, the same tokens a step) and continue
at the length the tasks use, as BERT itself went from 128 to 512. On 2 CPU cores these
two runs (56.6 minutes in all, 4 layers, hidden 256) reach 0.47 held-out MLM accuracy,
where an hour at 128 tokens alone reached 0.28-0.36::

    python examples/pretrain_mlm.py --corpus ... --maxlen 64 --batch-size 64 \\
        --initializer-range 0.06 --mixed-precision bf16 --total-steps 8000 \\
        --minutes 23 --output-dir checkpoints/short
    python examples/pretrain_mlm.py --corpus ... --maxlen 128 --batch-size 32 \\
        --config checkpoints/short/bert_config.json --vocab checkpoints/short/vocab.txt \\
        --init-checkpoint checkpoints/short/bert_model.ckpt --lr 4e-4 --warmup-steps 200 \\
        --mixed-precision bf16 --fit-schedule --minutes 33 --output-dir checkpoints/pretrained

The defaults are for short budgets on small batches: no dropout while pretraining
(the written ``bert_config.json`` carries the fine-tuning dropout, ``--finetune-dropout``,
default 0.1), gradients clipped to global norm 1.0 as in Google's pretraining, and Adam
with ``beta_2 = 0.98``; without the clipping, batches of 8-32 sequences at learning
rates of 1e-3 and up can collapse the model back to the unigram distribution.
"""
import argparse
import gc
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401  (bertkit before TensorFlow, without its start-up log)

import h5py  # noqa: E402
import keras  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from bertkit import optimizers, resume  # noqa: E402
from bertkit.distribute import distribute_batches, is_chief  # noqa: E402
from bertkit.tasks import pretraining  # noqa: E402
from bertkit.checkpoints import save_checkpoint_dir  # noqa: E402
from bertkit.config import BertConfig  # noqa: E402
from bertkit.models import build_transformer_model, family_names, get_family  # noqa: E402
from bertkit.schedules import PiecewiseLinear  # noqa: E402
from bertkit.tokenizers import Tokenizer  # noqa: E402
from bertkit.storage import RunDirectory, write_bytes_atomically  # noqa: E402
from common import (BadLine, add_distribute_argument, add_export_arguments,  # noqa: E402
                    add_logging_arguments, add_mixed_precision_argument, add_run_arguments,
                    check_distribute_argument, check_logging_arguments, dtype_policy,
                    export_for_serving, fit_verbosity, is_chief_process, logging_callbacks,
                    make_run_strategy, read_records, run_cli)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
STATE_FILE = "pretraining_state.h5"  # committed as pretraining_state.<version>.h5
# Flags a resumed run may change: how long it runs, how it saves and reports, what config
# it writes. Every other flag shapes the model, the data order or the schedule, and a
# --resume with another value is refused with the flag named.
RESUMABLE_FLAGS = {"minutes", "max_steps", "save_every", "verbose", "fit_schedule",
                   "probe_steps", "finetune_dropout", "output_dir", "resume", "overwrite",
                   "debug", "log_dir", "distribute"}
PATH_FLAGS = {"corpus", "vocab", "config", "init_checkpoint"}
PROBE_WARMUP = 10  # steps --fit-schedule leaves untimed: the first ones trace the graph
SCHEDULE_MARGIN = 0.97  # the share of the measured budget --fit-schedule plans for
SAMPLE_CORPUS = [os.path.join(HERE, "data", "sentiment.train.data"),
                 os.path.join(HERE, "data", "spo.train.json")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", nargs="+", metavar="FILE",
                   help="text files, one document a line (default: the sample texts; then "
                        "--minutes defaults to 1)")
    p.add_argument("--text-column", type=int, default=-1, help="column of .tsv files")
    p.add_argument("--repeat", nargs="+", type=int, metavar="N",
                   help="how often each --corpus file's training documents are used per "
                        "epoch, one N a file (default 1 each): >1 up-weights a small "
                        "in-domain file, such as a task's own training texts")
    p.add_argument("--vocab", help="vocab.txt (default: the shared Chinese vocabulary, "
                   "else the demo vocabulary)")
    p.add_argument("--config", help="bert_config.json (instead of the size flags)")
    p.add_argument("--model", default="bert", choices=family_names(),
                   help="the model family to pretrain (default: bert); with "
                        "--init-checkpoint, that checkpoint's family")
    p.add_argument("--init-checkpoint", help="continue pretraining this Google checkpoint "
                   "(needs --config and its --vocab)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="hidden and attention dropout while pretraining (default 0: under a "
                        "short budget dropout only slows learning, attention dropout most of "
                        "all, as it hides the neighbours a masked token is predicted from)")
    p.add_argument("--finetune-dropout", type=float, default=None,
                   help="the dropout written into the checkpoint's bert_config.json, which "
                        "fine-tuning uses (default: --config's, else 0.1)")
    p.add_argument("--maxlen", type=int, default=128,
                   help="tokens a packed sequence; short sequences leave the early plateau "
                        "of MLM accuracy (~0.16, the unigram distribution) much sooner, so "
                        "under an hour's budget start at 64 and continue at 128 with "
                        "--init-checkpoint (256-token sequences kept a small model on the "
                        "plateau for a whole hour)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grad-accum-steps", type=int, default=1,
                   help="update every N batches with their mean gradient")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up updates (default: 10%% of training, at most 1000)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip-norm", type=float, default=1.0,
                   help="clip the gradients to this global norm, as Google's pretraining "
                        "does (0: no clipping); without it small batches can collapse the "
                        "model back to predicting the most frequent token")
    p.add_argument("--beta-2", type=float, default=0.98,
                   help="Adam's second-moment decay (0.98 is steadier than 0.999 with the "
                        "small batches a CPU affords)")
    p.add_argument("--initializer-range", type=float, default=0.02,
                   help="standard deviation of the initial weights (with the size flags)")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the corpus; the learning rate decays to 0 over them "
                        "(default 3; 20 on the sample texts)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop (and save) after this many minutes of training")
    p.add_argument("--total-steps", type=int, default=None,
                   help="length of the run in batches, over which the learning rate decays "
                        "to 0 (default: --epochs passes); fit it to --minutes so that the "
                        "run ends on the low learning rates, where most of the loss falls")
    p.add_argument("--fit-schedule", action="store_true",
                   help="with --minutes: after --probe-steps and again at every epoch end, "
                        "end the learning-rate schedule at the step the time left reaches "
                        "at the speed just measured (going on from the current learning "
                        "rate), so that it decays to 0 within the budget even when the "
                        "machine's speed changes; --total-steps, if given, is the most it "
                        "may reach")
    p.add_argument("--probe-steps", type=int, default=60, metavar="STEPS",
                   help="steps timed by --fit-schedule (the first 10 are not counted: "
                        "they include tracing)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop (and save) at this step, leaving the schedule as it is "
                        "(an interruption that --resume continues)")
    p.add_argument("--holdout", type=float, default=0.01,
                   help="share of documents held out for the MLM loss/accuracy per epoch")
    p.add_argument("--save-every", "--save-every-steps", type=int, default=500,
                   dest="save_every", metavar="STEPS",
                   help="save every STEPS steps (and at every epoch end); the name "
                        "--save-every-steps is the fine-tuning examples'")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip corpus lines that cannot be read (not UTF-8, no text column) "
                        "with a count instead of stopping")
    add_run_arguments(p, os.path.join(REPO_ROOT, "checkpoints", "pretrained"),
                      resume_help="continue from --output-dir's last save; the flags that "
                                  "shape the run must be those it was started with")
    add_mixed_precision_argument(p)
    add_distribute_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2],
                   help="Keras fit verbosity (default: 1, progress bars, on a terminal; 2, a "
                        "line an epoch, in a file); any --verbose also shows TensorFlow's "
                        "own start-up log")
    add_logging_arguments(p, plot=False)
    add_export_arguments(p)
    args = p.parse_args(argv)
    check_logging_arguments(p, args)
    check_distribute_argument(p, args)
    if args.distribute == "multiworker" and (args.minutes is not None or args.fit_schedule):
        p.error("--minutes and --fit-schedule go by each worker's own clock, so the workers "
                "would stop at different steps; with --distribute multiworker give "
                "--total-steps or --epochs")
    if args.corpus is None:
        args.corpus = SAMPLE_CORPUS
        if args.distribute != "multiworker":
            args.minutes = 1.0 if args.minutes is None else args.minutes
        args.epochs = 20 if args.epochs is None else args.epochs
    args.epochs = 3 if args.epochs is None else args.epochs
    if args.clip_norm < 0:
        p.error(f"--clip-norm must be >= 0 (0: no clipping), got {args.clip_norm}")
    if not 0 < args.beta_2 < 1:
        p.error(f"--beta-2 must be in (0, 1), got {args.beta_2}")
    if args.initializer_range <= 0:
        p.error(f"--initializer-range must be > 0, got {args.initializer_range}")
    for name in ("maxlen", "batch_size", "epochs", "grad_accum_steps", "save_every",
                 "total_steps", "max_steps", "probe_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.init_checkpoint and not (args.config and args.vocab):
        p.error("--init-checkpoint needs the checkpoint's --config and --vocab")
    if args.fit_schedule and args.minutes is None:
        p.error("--fit-schedule fits the schedule to --minutes; give --minutes")
    if args.fit_schedule and args.probe_steps <= PROBE_WARMUP:
        p.error(f"--probe-steps must exceed the {PROBE_WARMUP} untimed warm-up steps")
    if not 0 <= args.holdout < 1:
        p.error("--holdout must be in [0, 1)")
    if args.repeat is None:
        args.repeat = [1] * len(args.corpus)
    elif len(args.repeat) != len(args.corpus):
        p.error(f"--repeat takes one count per --corpus file: {len(args.corpus)} file(s), "
                f"{len(args.repeat)} count(s)")
    elif min(args.repeat) < 1:
        p.error("--repeat counts must be at least 1")
    return args


# -- data -------------------------------------------------------------------------------


def read_texts(path, text_column=-1, skip_bad_lines=False):
    """The documents of one corpus file (see the module docstring for the formats)."""
    if path.endswith(".tsv"):
        def parse(line):
            columns = line.split("\t")
            try:
                return columns[text_column]
            except IndexError:
                raise BadLine(f"no column {text_column} (line has {len(columns)}); set "
                              "--text-column") from None
    elif path.endswith(".data"):
        def parse(line):
            return line.rpartition("\t")[0] or line
    elif path.endswith((".json", ".jsonl")):
        def parse(line):
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                text = None
            if not isinstance(text, str):
                raise BadLine("expected a JSON object with a 'text'")
            return text
    else:
        def parse(line):
            return line
    return read_records(path, parse, skip_bad_lines, what="corpus file")


def load_corpus(args, tokenizer):
    """``(train documents, held-out documents)`` as token ids, split with ``--seed``.

    A text in several files counts once, for the first file that has it. The held-out
    documents are drawn before ``--repeat`` copies a file's training documents, so no
    held-out text is ever trained on.
    """
    repeat_of, read = {}, 0  # text -> its file's --repeat; dicts keep the first order
    for path, repeat in zip(args.corpus, args.repeat):
        file_texts = read_texts(path, args.text_column, args.skip_bad_lines)
        used = f", used {repeat}x an epoch" if repeat > 1 else ""
        print(f"{path}: {len(file_texts)} documents{used}")
        read += len(file_texts)
        for text in file_texts:
            repeat_of.setdefault(text, repeat)  # the same review in two files counts once
    if len(repeat_of) < read:
        print(f"dropped {read - len(repeat_of)} duplicate document(s)")
    documents, repeats = [], []
    for text, repeat in tqdm(repeat_of.items(), desc="tokenize", mininterval=5,
                             disable=None):  # a bar on a terminal only
        ids, _ = pretraining.tokenize_documents([text], tokenizer)
        documents.extend(ids)
        repeats.extend([repeat] * len(ids))
    dropped = len(repeat_of) - len(documents)
    if dropped:
        print(f"dropped {dropped} document(s) without any token")
    if not documents:
        raise ValueError(f"no tokens in the corpus {args.corpus}")
    order = list(range(len(documents)))
    random.Random(args.seed).shuffle(order)
    cut = round(len(order) * args.holdout) if len(order) > 1 else 0
    cut = max(1, cut) if args.holdout > 0 and len(order) > 1 else cut
    held_out = [documents[i] for i in order[:cut]]
    train = [documents[i] for i in order[cut:] for _ in range(repeats[i])]
    tokens = sum(len(d) for d in train)
    print(f"train: {len(train)} documents, {tokens} tokens; held out: {len(held_out)} documents")
    return train, held_out


# -- model and optimizer ----------------------------------------------------------------


def model_config(args, vocab_size):
    """``(pretraining config, config to write)``, two ``BertConfig``: ``--config`` or the
    size flags, with ``--dropout`` for pretraining and ``--finetune-dropout`` in the
    written one."""
    if args.config:
        config = BertConfig.from_json_file(args.config)
        config.check_inputs(maxlen=args.maxlen, source=args.config)
    else:
        config = BertConfig(
            vocab_size=vocab_size, num_hidden_layers=args.layers, hidden_size=args.hidden,
            num_attention_heads=args.heads, intermediate_size=args.intermediate,
            hidden_act="gelu", max_position_embeddings=max(512, args.maxlen),
            type_vocab_size=2, initializer_range=args.initializer_range,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    if config.vocab_size != vocab_size:
        raise ValueError(f"vocab_size {config.vocab_size} of {args.config} differs from "
                         f"the {vocab_size} tokens of {args.vocab}")
    written = config
    if args.finetune_dropout is not None:
        written = config.replace(hidden_dropout_prob=args.finetune_dropout,
                                 attention_probs_dropout_prob=args.finetune_dropout)
    pretrain = config.replace(hidden_dropout_prob=args.dropout,
                              attention_probs_dropout_prob=args.dropout)
    return pretrain, written


def lr_schedule_for(args, total_updates):
    """The piecewise-linear learning-rate factor: warm-up to 1, then linear decay to 0
    at ``total_updates`` (optimizer updates, so steps over ``--grad-accum-steps``)."""
    warmup = args.warmup_steps
    if warmup is None:
        warmup = max(1, min(1000, total_updates // 10))
    warmup = min(warmup, max(1, total_updates - 1))
    return {warmup: 1.0, max(warmup + 1, total_updates): 0.0}


def fitted_total_steps(step, seconds_left, seconds_per_step, evaluation_share=0.0,
                       upper_bound=None):
    """The step a time budget reaches: ``step`` plus what ``seconds_left`` affords.

    Args:
        step: steps done so far.
        seconds_left: training time left in the budget.
        seconds_per_step: the measured speed.
        evaluation_share: held-out evaluation and saving as a share of training time
            (each epoch's held-out pass costs about a third of a step a batch).
        upper_bound: the most the result may be (``--total-steps``), or None.

    Returns:
        At least ``step + 1``; :data:`SCHEDULE_MARGIN` of the affordable steps, so that a
        machine slowing down a little still reaches the end of the schedule.
    """
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    affordable = SCHEDULE_MARGIN * max(0.0, seconds_left) / (
        seconds_per_step * (1.0 + evaluation_share))
    total = step + max(1, int(affordable))
    return total if upper_bound is None else min(total, upper_bound)


def schedule_factor(schedule, update):
    """The piecewise-linear factor of ``schedule`` (``{update: factor}``, 0 at update 0
    unless given, constant after the last point) at ``update``."""
    # The optimizer's own interpolation, so the refit continues from the very factor
    # the traced step applies.
    return float(keras.ops.convert_to_numpy(PiecewiseLinear(schedule)(update)))


def refitted_schedule(schedule, update, total_updates):
    """``schedule`` up to ``update``, then linear from its factor there to 0 at
    ``total_updates``: no jump in the learning rate where the schedule is refitted.
    Before the end of the warm-up only the end of the decay moves."""
    points = sorted(PiecewiseLinear(schedule).schedule.items())  # validated, keys int
    warmup = points[0][0]
    if update <= warmup:
        return {warmup: points[0][1], max(warmup + 1, total_updates): 0.0}
    kept = {step: factor for step, factor in points if step < update}
    kept[update] = schedule_factor(schedule, update)
    kept[max(update + 1, total_updates)] = 0.0
    return kept


def build_optimizer(args, total_updates):
    """Adam with decoupled weight decay (not on norms and biases), warm-up and linear
    decay, gradient clipping, and optional gradient accumulation."""
    optimizer_class = optimizers.extend_with_piecewise_linear_lr(
        optimizers.extend_with_weight_decay(keras.optimizers.Adam))
    kwargs = dict(learning_rate=args.lr, beta_2=args.beta_2, epsilon=1e-6,
                  global_clipnorm=args.clip_norm or None, weight_decay_rate=args.weight_decay,
                  exclude_from_weight_decay=["Norm", "bias"],
                  lr_schedule=lr_schedule_for(args, total_updates))
    if args.grad_accum_steps > 1:
        optimizer_class = optimizers.extend_with_gradient_accumulation(optimizer_class)
        kwargs["grad_accum_steps"] = args.grad_accum_steps
    return optimizer_class(**kwargs)


# -- saving and resuming ----------------------------------------------------------------


def run_flags(args):
    """The flags that define a run, as recorded in its manifest (paths made absolute)."""
    flags = {}
    for name, value in sorted(vars(args).items()):
        if name in RESUMABLE_FLAGS:
            continue
        if name in PATH_FLAGS and value is not None:
            value = [os.path.abspath(v) for v in value] if isinstance(value, list) \
                else os.path.abspath(value)
        flags[name] = value
    return flags


def check_resume_flags(saved, flags, manifest_path):
    """Refuses a ``--resume`` whose flags differ from the saved run's, naming each."""
    changed = [name for name in flags if saved.get(name) != flags[name]]
    if changed:
        def show(value):
            return " ".join(map(str, value)) if isinstance(value, list) else value

        lines = "; ".join(f"--{n.replace('_', '-')} {show(flags[n])} (the saved run: "
                          f"{show(saved.get(n))})" for n in changed)
        raise ValueError(f"--resume: {lines}. A resumed run keeps the flags it was "
                         f"started with ({manifest_path}); drop these flags, or start a new "
                         "run with --overwrite or another --output-dir")


def state_bytes(builder, optimizer, step, total_steps=None):
    """The resume state as the bytes of an HDF5 file (``bertkit.resume.state_bytes``):
    weights, optimizer variables, the step, the run's length and the learning-rate
    schedule (as ``--fit-schedule`` left it, which a resumed run keeps)."""
    attrs = {"step": int(step)}
    if total_steps is not None:
        attrs["total_steps"] = int(total_steps)
    if getattr(optimizer, "lr_schedule", None) is not None:
        attrs["lr_schedule"] = json.dumps({int(k): float(v) for k, v
                                           in optimizer.lr_schedule.items()})
    return resume.state_bytes(builder.model, optimizer, attrs)


def load_state(path, builder, optimizer):
    """Restores what :func:`state_bytes` wrote; returns the step to continue from.

    Every saved shape is checked before any variable is assigned.
    """
    return int(resume.restore_state(path, builder.model, optimizer)["step"])


def saved_schedule(path):
    """``(total steps, lr schedule)`` a save records, or ``(None, None)``."""
    if path is None or not os.path.isfile(path):
        return None, None
    with h5py.File(path, "r") as f:
        total = int(f.attrs["total_steps"]) if "total_steps" in f.attrs else None
        schedule = (None if "lr_schedule" not in f.attrs else
                    {int(k): v for k, v in json.loads(f.attrs["lr_schedule"]).items()})
        return total, schedule


class SaveAndStop(keras.callbacks.Callback):
    """Saves the checkpoint directory and the resume state; stops at a time or step limit.

    Saves every ``save_every`` steps, at each epoch end and when training stops. With
    ``fit_schedule``, also pauses training after ``probe_steps`` and at every epoch end
    with the speed of the steps since the last pause in ``seconds_per_step`` (the
    first :data:`PROBE_WARMUP` steps of each fit, which trace the graph, not counted),
    so that ``main`` refits the schedule to the budget and goes on.
    """

    def __init__(self, args, run, flags, builder, vocab_path, step, total, config=None,
                 fit_schedule=False, probe_steps=0):
        super().__init__()
        self.args, self.builder, self.vocab_path = args, builder, vocab_path
        self.run, self.flags = run, flags
        self.total = total
        self.config = config
        self.step, self.saved_step = step, step
        self.deadline = None if args.minutes is None else time.time() + 60 * args.minutes
        self.stopped = False
        self.fit_schedule = fit_schedule
        self.probe_end = step + probe_steps if fit_schedule and probe_steps else None
        self.timed_from, self.clock, self.last_batch_end = None, None, None
        self.seconds_per_step = None

    def save(self):
        """Writes the Google checkpoint directory, then commits the resume state with
        the run's flags: a kill at any point leaves the last committed state whole."""
        if self.saved_step == self.step:
            return
        if not is_chief(self.model.distribute_strategy):  # only the chief writes
            self.saved_step = self.step
            return
        save_checkpoint_dir(self.builder, self.args.output_dir, config=self.config,
                            vocab_path=self.vocab_path)
        state = state_bytes(self.builder, self.model.optimizer, self.step, self.total)
        self.run.commit(self.flags,
                        {"state": (STATE_FILE, lambda path: write_bytes_atomically(path, state))},
                        state={"step": self.step, "total_steps": self.total})
        self.saved_step = self.step

    def on_train_begin(self, logs=None):
        self.timed_from, self.clock, self.seconds_per_step = self.step + PROBE_WARMUP, None, None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.last_batch_end = time.time()
        if self.step == self.timed_from:
            self.clock = self.last_batch_end
        if self.step % self.args.save_every == 0:
            self.save()
        out_of_time = self.deadline is not None and time.time() > self.deadline
        stop_step = min(self.total, self.args.max_steps or self.total)
        if out_of_time or self.step >= stop_step:
            self.stopped = self.model.stop_training = True
        elif self.step == self.probe_end:
            self.probe_end = None
            self.pause_to_refit()

    def on_epoch_end(self, epoch, logs=None):
        self.save()
        if self.fit_schedule and not self.stopped:
            self.pause_to_refit()

    def pause_to_refit(self):
        if self.clock is not None and self.step > self.timed_from:
            self.seconds_per_step = (self.last_batch_end - self.clock) / (
                self.step - self.timed_from)
            self.model.stop_training = True


# -- main -------------------------------------------------------------------------------


def refit_schedule(args, saver, optimizer, validation, steps_an_epoch):
    """Ends the schedule where the budget left reaches at the speed just measured;
    returns the new total of steps."""
    evaluation = 0.0 if validation is None else len(validation[1]) / (3 * steps_an_epoch)
    total = fitted_total_steps(saver.step, saver.deadline - time.time(),
                               saver.seconds_per_step, evaluation, args.total_steps)
    accumulate = args.grad_accum_steps
    optimizer.lr_schedule = refitted_schedule(optimizer.lr_schedule, saver.step // accumulate,
                                              total // accumulate)
    print(f"--fit-schedule: {saver.seconds_per_step:.3f} s/step at step {saver.step}, so the "
          f"schedule now ends at step {total} ({SCHEDULE_MARGIN:.0%} of what the time left "
          f"affords)")
    saver.total, saver.seconds_per_step = total, None
    return total


def open_run(args, flags):
    """The run directory of ``--output-dir`` and the state file to resume from (or None).

    Refuses, before any work, to start over a saved run without ``--resume`` or
    ``--overwrite``, and to resume with other flags than the run's.
    """
    run = RunDirectory(args.output_dir)
    manifest = run.claim(overwrite=args.overwrite, resume=args.resume,
                         clean=is_chief_process(args))
    if not args.resume:
        return run, None
    if manifest is None or "state" not in manifest.get("files", {}):
        raise FileNotFoundError(f"--resume: no saved run in {args.output_dir}; start "
                                "without --resume")
    check_resume_flags(manifest["settings"], flags, run.manifest_path)
    return run, run.file("state")


def resolve_vocab(args):
    if args.vocab is None:
        from demo import ensure_demo_checkpoint, shared_vocab_path

        args.vocab = shared_vocab_path() or ensure_demo_checkpoint()[2]
    if not os.path.isfile(args.vocab):
        raise FileNotFoundError(f"vocab file not found: {args.vocab}")


def export(args):
    """Exports the encoder pretrained in ``--output-dir`` for serving, as a feature
    extractor: ``sequence_output`` ``[B, T, H]`` (float32)."""
    manifest = RunDirectory(args.output_dir).read()
    paths = [os.path.join(args.output_dir, name) for name in
             ("bert_config.json", "bert_model.ckpt.index", "vocab.txt")]
    if manifest is None or not all(os.path.isfile(path) for path in paths):
        raise FileNotFoundError(f"no pretrained checkpoint in {args.output_dir}: pretrain "
                                "first (same --output-dir)")
    settings = manifest["settings"]
    args.vocab, args.maxlen, args.do_lower_case = paths[2], settings["maxlen"], False
    encoder = build_transformer_model(paths[0], paths[1][:-len(".index")],
                                      model=settings["model"])
    return export_for_serving(args, encoder, ["sequence_output"],
                              {"task": "features", "model": settings["model"]})


def main(argv=None):
    args = parse_args(argv)
    if args.export:
        return export(args)
    resolve_vocab(args)
    flags = run_flags(args)
    run, state_path = open_run(args, flags)
    # First: a multi-worker strategy must exist before TensorFlow runs anything.
    strategy = make_run_strategy(args)
    keras.utils.set_random_seed(args.seed)
    tokenizer = Tokenizer(args.vocab)
    pretrain_config, written_config = model_config(args, tokenizer.vocab_size)
    train_docs, held_out_docs = load_corpus(args, tokenizer)
    data = pretraining.MaskedLMData.from_tokenizer(train_docs, tokenizer, args.maxlen,
                                                   args.batch_size, seed=args.seed)
    validation = None
    if held_out_docs:  # fixed masks: the same held-out task every epoch
        validation = pretraining.MaskedLMData.from_tokenizer(
            held_out_docs, tokenizer, args.maxlen, args.batch_size, seed=args.seed + 1,
            shuffle=False).arrays(0)

    with strategy.scope():  # variables, the checkpoint's values and the optimizer's slots
        builder = build_transformer_model(pretrain_config,
                                          args.init_checkpoint, model=args.model,
                                          with_pool=get_family(args.model).has_pooler,
                                          with_mlm=True,
                                          dtype=dtype_policy(args),
                                          return_keras_model=False)
        model = pretraining.build_pretraining_model(builder, data.max_predictions)
        steps = len(data)
        total = args.total_steps or steps * args.epochs
        args.epochs = -(-total // steps)  # the last pass may be cut short by --total-steps
        saved_total, schedule = saved_schedule(state_path)
        if saved_total is not None:  # a fitted schedule goes on from where it was
            total = saved_total
            args.epochs = -(-total // steps)
        optimizer = build_optimizer(args, total // args.grad_accum_steps)
        if schedule is not None:
            optimizer.lr_schedule = schedule
        pretraining.compile_pretraining_model(model, optimizer)
    os.makedirs(args.output_dir, exist_ok=True)
    step = 0
    if args.resume:
        optimizer.build(model.trainable_variables)
        step = load_state(state_path, builder, optimizer)
        print(f"resumed at step {step} of {total}")
    print(f"{data.num_sequences} sequences of {args.maxlen} tokens, {steps} steps an epoch, "
          f"{total} in all; {data.max_predictions} prediction slots a sequence")

    saver = SaveAndStop(args, run, flags, builder, args.vocab, step, total, written_config,
                        fit_schedule=args.fit_schedule,
                        probe_steps=0 if args.resume else args.probe_steps)
    start, history = time.time(), {}
    while step < total and not saver.stopped:
        epoch, offset = divmod(step, steps)
        # A resumed run first finishes its interrupted epoch, then runs whole epochs.
        last_epoch = epoch + 1 if offset else args.epochs
        fit = model.fit(distribute_batches(strategy, data.dataset(step)),
                        steps_per_epoch=steps - offset,
                        epochs=last_epoch, initial_epoch=epoch, validation_data=validation,
                        validation_batch_size=args.batch_size,
                        callbacks=[saver, *logging_callbacks(args)],
                        verbose=fit_verbosity() if args.verbose is None else args.verbose,
                        shuffle=False)
        history = {k: v[-1] for k, v in fit.history.items()}
        step = saver.step
        if saver.seconds_per_step is not None and not saver.stopped:
            total = refit_schedule(args, saver, optimizer, validation, len(data))
            model.train_function = None  # retrace: the schedule is part of the traced step
            args.epochs = -(-total // steps)
    saver.save()
    if validation is not None and step % steps:  # stopped mid-epoch: score the end too
        x, labels, weights = validation
        scores = model.evaluate(x, labels, sample_weight=weights, batch_size=args.batch_size,
                                verbose=0, return_dict=True)
        history.update({f"val_{k}": v for k, v in scores.items()})
    # Finalise the endless input pipeline's generator now, while Python is alive
    # (at interpreter exit TensorFlow cannot and prints an error about it).
    gc.collect()
    minutes = (time.time() - start) / 60
    scores = "  ".join(f"{k} {v:.4f}" for k, v in history.items())
    print(f"step {step} of {total}  {scores}  ({minutes:.1f} min)  checkpoint: "
          f"{args.output_dir}")
    return dict(history, step=step, minutes=minutes, builder=builder, model=model)


if __name__ == "__main__":
    sys.exit(run_cli(main))
