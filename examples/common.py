"""Command-line pieces the example scripts share.

The fine-tuning examples take the same checkpoint flags (``--config --checkpoint
--vocab --model --do-lower-case``), the same optimisation flags (``--batch-size
--epochs --lr --warmup-steps --weight-decay --ema --layerwise-lr-decay
--reinit-top-blocks``) and
``--mixed-precision``; they read their data line by line with errors that name the
file and line, check inputs against the config before any work, commit the best
weights together with what ``--predict`` needs to a run directory
(``bertkit.storage.RunDirectory``), and print an expected error as one line. Defining
them once keeps their names, defaults and checks the same in every script.
"""
import functools
import os
import sys

from bertkit import _onednn, huggingface, models, optimizers
from bertkit.callbacks import AttentionImages, Evaluator
from bertkit.config import BertConfig
from bertkit.distribute import (STRATEGIES, WorkerLost, dropped_per_epoch, is_chief,
                                make_strategy, read_tf_config, worker_index)
from bertkit.resume import TrainingBackup, fit_epochs
from bertkit.export import DEFAULT_FORMATS, FORMATS, SERVING_FILE, export_model
from bertkit.storage import RunDirectory, weights_writer, write_lines_atomically  # noqa: F401
from bertkit.tokenizers import Tokenizer

WEIGHTS_FILE = "best.weights.h5"
LAST_WEIGHTS_FILE = "last.weights.h5"
DTYPE_POLICIES = {"fp32": None, "bf16": "mixed_bfloat16"}  # --mixed-precision -> Keras policy


def add_checkpoint_arguments(parser):
    """``--config --checkpoint --vocab --model --do-lower-case``."""
    parser.add_argument("--config", help="bert_config.json of a Google-format checkpoint")
    parser.add_argument("--checkpoint", help="checkpoint prefix, e.g. .../bert_model.ckpt, or "
                        "a Hugging Face directory (config.json, model.safetensors, vocab.txt: "
                        "then --config and --vocab come from it)")
    parser.add_argument("--vocab", help="vocab.txt of the checkpoint")
    parser.add_argument("--model", default=None, choices=models.family_names(),
                        help="the checkpoint's model family (default: a Hugging Face "
                             "config's model_type, else bert)")
    parser.add_argument("--do-lower-case", action="store_true",
                        help="for uncased English models")
    add_verbose_argument(parser)


def add_logging_arguments(parser, attention=False, plot=True):
    """``--log-dir`` (TensorBoard) and, with ``plot``, ``--plot`` (a PNG at the end)."""
    what = "scalars (loss, learning rate, validation scores)"
    if attention:
        what += " and the last layer's attention on a validation sentence"
    parser.add_argument("--log-dir", metavar="DIR",
                        help=f"write TensorBoard {what} after every epoch; look with "
                             "`tensorboard --logdir DIR`")
    if not plot:
        return
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the training curves" + (" and the attention heat maps"
                                                           if attention else "")
                             + " into FILE.png at the end (needs bertkit[plots])")


def check_logging_arguments(parser, args):
    """``--log-dir`` needs TensorBoard and ``--plot`` matplotlib: said before any work."""
    import importlib.util

    for flag, module in (("log_dir", "tensorboard"), ("plot", "matplotlib")):
        if getattr(args, flag, None) and importlib.util.find_spec(module) is None:
            parser.error(f"--{flag.replace('_', '-')} needs {module}: pip install "
                         "'bertkit[plots]'")
    if getattr(args, "plot", None) and not args.plot.endswith(".png"):
        parser.error(f"--plot writes a PNG; give a FILE.png, got {args.plot!r}")


def logging_callbacks(args, attention_inputs=None):
    """The callbacks of ``--log-dir``: Keras's TensorBoard (it logs the learning rate and
    the evaluator's scores too, since the evaluator runs first) and, with
    ``attention_inputs``, the attention images."""
    if not getattr(args, "log_dir", None) or not is_chief_process(args):
        return []  # in a multi-worker run only the chief writes
    import keras

    found = [keras.callbacks.TensorBoard(args.log_dir, write_graph=False)]
    if attention_inputs is not None:
        found.append(AttentionImages(attention_inputs, args.log_dir))
    return found


def save_run_plot(args, model, history, attention_inputs=None, tokens=None):
    """``--plot``: the curves of ``history`` and the last layer's attention heat maps."""
    if not getattr(args, "plot", None):
        return
    from bertkit.plots import save_training_plot

    attention = None
    if attention_inputs is not None:
        probe = AttentionImages(attention_inputs, log_dir=".")
        probe.set_model(model)
        attention = probe.probabilities()
    save_training_plot(args.plot, history, attention=attention, tokens=tokens)
    print(f"plot: {args.plot}")


def add_verbose_argument(parser):
    """``--verbose``: TensorFlow's native log too (``quiet.py`` hides it by default)."""
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up and device log")


def fit_verbosity():
    """Keras ``fit`` verbosity: a progress bar on a terminal, one line an epoch in a file
    (the bar's ``\r`` updates would fill a log with unreadable lines)."""
    return 1 if sys.stdout.isatty() else 2


def add_mixed_precision_argument(parser):
    """``--mixed-precision fp32|bf16``; :func:`dtype_policy` turns it into a Keras policy."""
    parser.add_argument("--mixed-precision", choices=sorted(DTYPE_POLICIES), default="fp32",
                        help="bf16: bfloat16 matmuls with float32 variables, softmax, norms "
                             "and losses (faster on CPUs with bf16 units, and on GPUs/TPUs)")


def add_fine_tuning_arguments(parser, epochs, lr_help):
    """The batch, schedule, regularisation and precision flags of fine-tuning."""
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=None, help=lr_help)
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: 10%% of training)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout rate inside the encoder (hidden and attention), instead "
                             "of the config's")
    parser.add_argument("--ema", type=float, default=0.0, metavar="MOMENTUM",
                        help="evaluate and keep an exponential moving average of the "
                             "weights, e.g. 0.999 (0: off)")
    parser.add_argument("--layerwise-lr-decay", type=float, default=None, metavar="DECAY",
                        help="layer i of L learns at lr * DECAY**(L - i), e.g. 0.9")
    parser.add_argument("--reinit-top-blocks", type=int, default=0, metavar="N",
                        help="start the checkpoint's last N transformer blocks afresh "
                             "(truncated normal 0.02, as a new BERT), which can help on "
                             "small data (default 0: keep them)")
    add_mixed_precision_argument(parser)
    parser.add_argument("--seed", type=int, default=42)
    add_distribute_argument(parser)
    parser.add_argument("--save-every-steps", type=int, default=None, metavar="N",
                        help="also save the training state every N steps (it is saved at "
                             "every epoch's end and on Ctrl-C), for --resume")


def add_distribute_argument(parser):
    """``--distribute none|mirrored|multiworker``."""
    parser.add_argument("--distribute", choices=STRATEGIES, default="none",
                        help="mirrored: every local GPU; multiworker: the machines of "
                             "TF_CONFIG (run the same command on each; see the README). "
                             "--batch-size is the global batch, split across replicas")


def check_fine_tuning_arguments(parser, args, checkpoint_optional=False):
    """Exits with a usage error on combinations and ranges argparse cannot express.

    Args:
        checkpoint_optional: skip the "--config, --checkpoint and --vocab go together"
            check (a script that can build a random model from ``--vocab`` alone).
    """
    resolve_huggingface_checkpoint(args)
    check_logging_arguments(parser, args)
    given = [args.config, args.checkpoint, args.vocab]
    if not checkpoint_optional and any(given) and not all(given):
        parser.error("--config, --checkpoint and --vocab go together")
    for name in ("maxlen", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.ema < 1:
        parser.error("--ema must be in [0, 1)")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        parser.error("--dropout must be in [0, 1)")
    if args.reinit_top_blocks < 0:
        parser.error("--reinit-top-blocks must be >= 0")
    if args.save_every_steps is not None and args.save_every_steps < 1:
        parser.error("--save-every-steps must be at least 1")
    check_distribute_argument(parser, args)


def check_distribute_argument(parser, args):
    """``--distribute multiworker`` needs a valid ``TF_CONFIG``: said before any work."""
    if args.distribute == "multiworker":
        try:
            read_tf_config()
        except ValueError as error:
            parser.error(str(error))


def make_run_strategy(args):
    """The strategy of ``--distribute`` (for ``multiworker``, once every worker of
    ``TF_CONFIG`` has connected); prints the replicas when there are several."""
    strategy = make_strategy(args.distribute)
    index, workers = worker_index(strategy)
    if strategy.num_replicas_in_sync > 1 or workers > 1:
        print(f"--distribute {args.distribute}: {strategy.num_replicas_in_sync} replica(s) on "
              f"{workers} worker(s), this is worker {index}" +
              (" (the chief: it writes the files)" if index == 0 else ""))
    return strategy


def resolve_huggingface_checkpoint(args):
    """``--checkpoint DIR`` of a Hugging Face model fills in ``--config`` (its
    ``config.json``), ``--vocab`` and, unless given, ``--do-lower-case`` (from
    ``tokenizer_config.json``)."""
    if not args.checkpoint or not huggingface.is_huggingface_checkpoint(args.checkpoint):
        return
    config_file = huggingface.huggingface_files(args.checkpoint)[0]
    directory = os.path.dirname(config_file)
    args.config = args.config or config_file
    if args.vocab is None:
        args.vocab = os.path.join(directory, "vocab.txt")
        if not args.do_lower_case:
            args.do_lower_case = Tokenizer.from_pretrained(directory)._do_lower_case


def dtype_policy(args):
    """The Keras dtype policy of ``--mixed-precision`` (None: the global policy); for bf16
    on a CPU without bfloat16 matmul units (and no GPU), a note that it is slower there."""
    if args.mixed_precision == "bf16":
        _note_slow_bfloat16()
    return DTYPE_POLICIES[args.mixed_precision]


@functools.lru_cache(maxsize=None)  # once a process
def _note_slow_bfloat16():
    import tensorflow as tf

    if _onednn.bfloat16_units() or not _onednn.cpu_flags() or tf.config.list_physical_devices(
            "GPU"):
        return
    print("NOTE: this CPU has no bfloat16 matmul units (avx512_bf16 or amx_bf16): bf16 runs "
          "through its float32 units, slower than fp32 (--mixed-precision fp32).")


def encoder_overrides(args):
    """Config overrides for ``build_transformer_model`` from ``--dropout`` (none if unset)."""
    if getattr(args, "dropout", None) is None:
        return {}
    return dict(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)


def reinitialize_blocks(args, encoder):
    """Applies ``--reinit-top-blocks`` to an encoder just loaded from a checkpoint."""
    if args.reinit_top_blocks:
        names = models.reinitialize_top_blocks(encoder, args.reinit_top_blocks, seed=args.seed)
        print(f"re-initialised the last {args.reinit_top_blocks} transformer block(s): "
              f"{len(names)} layers")


def build_optimizer(args, model, total_steps):
    """Adam with weight decay, warm-up and linear decay; optional layer-wise LR and EMA."""
    return optimizers.fine_tuning_optimizer(
        args.lr, total_steps, warmup_steps=args.warmup_steps, weight_decay_rate=args.weight_decay,
        layerwise_decay=args.layerwise_lr_decay, model=model, ema_momentum=args.ema or None)


def print_random_checkpoint_note(what):
    """Says loudly that the demo checkpoint is random, so ``what`` means nothing."""
    print(f"NOTE: training from a small RANDOM checkpoint (checkpoints/demo/). It cannot "
          f"give real {what}; pass --config/--checkpoint/--vocab of a pretrained BERT "
          f"(e.g. Google's chinese_L-12_H-768_A-12) for real results.")


def add_run_arguments(parser, default_output_dir, resume_help=None):
    """``--output-dir --overwrite --debug`` (and ``--resume`` when ``resume_help`` is given)."""
    parser.add_argument("--output-dir", default=default_output_dir)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --output-dir (it stays readable "
                             "until this run saves its first version)")
    if resume_help:
        parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")


def add_export_arguments(parser):
    """``--export DIR`` and ``--export-formats``: the saved run, exported for serving."""
    parser.add_argument("--export", metavar="DIR",
                        help="export the weights saved in --output-dir for serving into DIR "
                             "(SavedModel, ONNX, OpenVINO, the vocabulary and serving.json) "
                             "and exit; --overwrite replaces an earlier export")
    parser.add_argument("--export-formats", nargs="+", choices=FORMATS,
                        default=list(DEFAULT_FORMATS), metavar="FORMAT",
                        help=f"what --export writes, among {' '.join(FORMATS)} (default: "
                             f"{' '.join(DEFAULT_FORMATS)}; onnx-int8 is the ONNX file with "
                             "int8 matrix products, model.int8.onnx)")


def export_for_serving(args, model, outputs, metadata, directory=None):
    """Exports ``model`` to ``--export`` (or ``directory``) with the run's vocabulary and
    tokenizer settings, and prints what was written; returns ``{format: path}``."""
    directory = directory or args.export
    metadata = {"vocab": "vocab.txt", "do_lower_case": args.do_lower_case,
                "maxlen": args.maxlen, **metadata}
    written = export_model(model, directory, outputs=outputs, formats=args.export_formats,
                           metadata=metadata, files={"vocab.txt": args.vocab},
                           overwrite=args.overwrite)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    print(f"inputs, outputs and labels: {os.path.join(directory, SERVING_FILE)}")
    return written


RESUME_HELP = ("continue the interrupted run in --output-dir from its last save (weights, "
               "optimizer state, position in the data, best score), with the same flags")
# Flags a resumed run may change: where and how it reports, saves and runs, not what it
# trains. A --resume with another value of any other flag is refused, naming it.
RESUMABLE_FLAGS = {"output_dir", "resume", "overwrite", "debug", "verbose", "log_dir", "plot",
                   "save_every_steps", "distribute", "predict", "export", "export_formats"}
PATH_FLAGS = {"config", "checkpoint", "vocab", "data_dir", "train", "valid", "test", "schema",
              "train_data", "valid_data"}


def is_chief_process(args):
    """Whether this process writes the run's files: the only process, or the chief of
    ``--distribute multiworker`` (known from ``TF_CONFIG`` before any work)."""
    return args.distribute != "multiworker" or read_tf_config()[1] == 0


def claim_output_dir(args):
    """The run directory of ``--output-dir``, checked before any work is done: refused if
    it holds another run (unless ``--overwrite``); with ``--resume``, the saved state to
    go on from is found (``args.resume_state``). Other workers than the chief write
    nothing and claim nothing."""
    run = RunDirectory(args.output_dir)
    args.resume_state = None
    if getattr(args, "resume", False):
        if args.overwrite:
            raise ValueError("--resume continues the run in --output-dir, --overwrite "
                             "replaces it: pass one of them")
        manifest = run.claim(resume=True, clean=is_chief_process(args))
        args.resume_state = run.file("state")
        if args.resume_state is None:
            finished = manifest is not None and "last_weights" in manifest.get("files", {})
            raise FileNotFoundError(
                f"--resume: no saved training state in {args.output_dir}" +
                (" (the run there finished)" if finished else
                 "; start without --resume"))
    else:  # every worker refuses another run's directory: none may wait for a chief that quit
        run.claim(overwrite=args.overwrite, clean=is_chief_process(args))
    return run


def training_flags(args):
    """The flags that define a training run (paths made absolute), as the resume state
    records them."""
    flags = {}
    for name, value in sorted(vars(args).items()):
        if name in RESUMABLE_FLAGS or name == "resume_state":
            continue
        if name in PATH_FLAGS and isinstance(value, str):
            value = os.path.abspath(value)
        flags[name] = value if isinstance(value, (str, int, float, bool, type(None), list)) \
            else str(value)
    return flags


def report_dropped_items(generator, strategy):
    """Says how many items an epoch loses when its batches do not divide evenly between
    the replicas (each replica must weigh the same in the global batch's update)."""
    replicas = strategy.num_replicas_in_sync
    size, count = generator.batch_size, len(generator.data)
    sizes = [size] * (count // size) + ([count % size] if count % size else [])
    dropped = dropped_per_epoch(sizes, replicas)
    if dropped:
        print(f"note: {dropped} of {count} training items an epoch are left out, so that "
              f"every batch splits evenly between the {replicas} replicas (a --batch-size "
              f"that is a multiple of {replicas} leaves out at most {replicas - 1})")


def train_epochs(args, model, generator, make_dataset, evaluator, run, strategy,
                 callbacks=()):
    """Trains ``model`` on ``generator`` for ``--epochs`` (resuming with ``--resume``),
    saving the training state every ``--save-every-steps`` steps, at epoch ends and on
    Ctrl-C, and at the end the final weights (``last.weights.h5``) in its place.

    Args:
        make_dataset: ``generator -> tf.data.Dataset`` of one epoch of global batches.
        evaluator: the :class:`RunEvaluator` (its best score is saved and restored).
        run: the ``RunDirectory``; strategy: of ``--distribute``.
        callbacks: more Keras callbacks, after the evaluator.

    Returns:
        ``History.history`` of the epochs run (this process's).
    """
    report_dropped_items(generator, strategy)
    backup = TrainingBackup(run, evaluator.settings, len(generator),
                            save_every_steps=args.save_every_steps, evaluator=evaluator,
                            seed=generator.seed, flags=training_flags(args))
    backup.set_model(model)
    start = (0, 0)
    if args.resume_state:
        start = backup.restore(args.resume_state)
        evaluator.epoch = start[0]
        print(f"resumed at epoch {start[0] + 1}, batch {start[1]} of {len(generator)} "
              f"(best {evaluator.name} so far {evaluator.best:.4f})")
    history = fit_epochs(model, generator, make_dataset, args.epochs,
                         callbacks=[evaluator, *callbacks], backup=backup, start=start,
                         strategy=strategy, verbose=fit_verbosity())
    backup.finish({"last_weights": (LAST_WEIGHTS_FILE, weights_writer(model))})
    return history


def load_run(output_dir):
    """``(settings, weights path)`` of the run a training run committed in ``output_dir``.

    Raises:
        FileNotFoundError: no run there.
    """
    run = RunDirectory(output_dir)
    manifest = run.read()
    if manifest is None or "weights" not in manifest.get("files", {}):
        raise FileNotFoundError(f"{run.manifest_path} not found: train first (same "
                                "--output-dir)")
    return manifest["settings"], run.file("weights")


class RunEvaluator(Evaluator):
    """Scores after each epoch (on the EMA weights when the optimizer keeps them, as any
    :class:`~bertkit.callbacks.Evaluator`) and commits the best weights, with the run's
    settings, to a :class:`RunDirectory`.

    Args:
        generator, name: as for :class:`bertkit.callbacks.Evaluator`.
        run: the ``RunDirectory`` of ``--output-dir``.
        settings: what ``--predict`` needs to rebuild the model (stored with the weights).
    """

    def __init__(self, generator, run, settings, name, verbose=1):
        super().__init__(generator, name=name, verbose=verbose)
        self.run, self.settings = run, settings
        self.epoch, self.paths = 0, {}

    def extra_files(self):
        """``{role: (file name, writer)}`` committed with the best weights (none here)."""
        return {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch + 1
        super().on_epoch_end(epoch, logs)

    def save_best(self):
        """Commits the best weights (and :meth:`extra_files`), keeping the resume state;
        on the chief only."""
        if not is_chief(self.model.distribute_strategy):
            return
        files = {"weights": (WEIGHTS_FILE, weights_writer(self.model)), **self.extra_files()}
        self.paths = self.run.commit(self.settings, files,
                                     state={"epoch": self.epoch, self.name: self.best},
                                     keep=("state",))

    def best_weights(self):
        """The path of the best weights committed so far (also by an interrupted run
        this one resumed)."""
        return self.paths.get("weights") or self.run.file("weights")


class BadLine(ValueError):
    """Raised by a line parser of :func:`read_records`: what is wrong with the line."""


def decoded_lines(path):
    """``(number, line, problem)`` for each line of a file read as bytes: the line decoded
    as UTF-8 (a BOM on line 1 and the newline removed) and ``problem`` None, or ``line``
    None and what is wrong, so that one bad byte names its line and can be skipped."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, None, (f"not UTF-8 text (byte 0x{raw[error.start]:02x} at byte "
                                     f"{error.start + 1})")
                continue
            yield number, (line.lstrip("\ufeff") if number == 1 else line).rstrip("\r\n"), None


def bad_line(path, number, problem, what):
    """The error of a bad line, naming ``path:number`` and how to skip ``what``."""
    return ValueError(f"{path}:{number}: {problem} (use --skip-bad-lines to skip {what})")


def read_records(path, parse_line, skip_bad_lines=False, with_line_numbers=False,
                 what="data file"):
    """The records of a one-record-a-line UTF-8 file, with errors naming file:line.

    Args:
        path: the file.
        parse_line: ``line -> record``; raises :class:`BadLine` saying what is wrong.
        skip_bad_lines: skip (and count) bad lines, also those that are not UTF-8,
            instead of stopping at the first.
        with_line_numbers: return ``(records, line numbers)``.
        what: what the file is, for the messages.

    Raises:
        FileNotFoundError, ValueError: naming the file (and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    records, numbers, skipped = [], [], 0
    for number, line, problem in decoded_lines(path):
        if line is not None:
            if not line.strip():
                continue
            try:
                record = parse_line(line)
            except BadLine as error:
                problem = error
        if problem is not None:
            if not skip_bad_lines:
                raise bad_line(path, number, problem, "such lines")
            skipped += 1
            continue
        records.append(record)
        numbers.append(number)
    if skipped:
        print(f"{path}: skipped {skipped} malformed line(s)")
    if not records:
        raise ValueError(f"{path}: no lines to use in this {what}")
    return (records, numbers) if with_line_numbers else records


def check_encoder_inputs(args, tokenizer):
    """Checks ``--maxlen`` and the vocabulary against ``--config`` (a path or a
    ``BertConfig``) before any work; returns the config."""
    config, source = args.config, None
    if huggingface.is_huggingface_checkpoint(config):
        source = huggingface.huggingface_files(config)[0]
        config = huggingface.read_huggingface_config(source)[1]
    elif not isinstance(config, BertConfig):
        config, source = BertConfig.from_json_file(args.config), args.config
    config.check_inputs(maxlen=args.maxlen, vocab_size=tokenizer.vocab_size,
                        vocab_path=args.vocab, source=source)
    return config


def run_cli(main, argv=None):
    """Runs an example's ``main``: an expected error (a bad file, flag or value) prints
    one line, ``error: <file>:<line>: ...``, and exits 2; ``--debug`` shows the traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except (OSError, ValueError) as error:
        if "--debug" in argv:
            raise
        ours = isinstance(error, OSError) and error.strerror and error.filename is None
        print(f"error: {error.strerror if ours else error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the output directory keeps its last saved version",
              file=sys.stderr)
        return 130
    except WorkerLost as error:
        print(f"error: {error}. The last save in --output-dir is where --resume goes on.",
              file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # TensorFlow's teardown of a broken cluster (gRPC, the coordination service) can
        # take long; the run is saved, so nothing is left to do.
        os._exit(3)
    return 0
