"""Command-line pieces the example scripts share.

The fine-tuning examples take the same checkpoint flags (``--config --checkpoint
--vocab --model --do-lower-case``), the same optimisation flags (``--batch-size
--epochs --lr --warmup-steps --weight-decay --ema --layerwise-lr-decay
--reinit-top-blocks``) and
``--mixed-precision``, and save what ``--predict`` needs next to the best weights.
Defining them once keeps their names, defaults and checks the same in every script.
"""
import json
import os

from bertkit import models, optimizers

RUN_FILE = "run.json"
WEIGHTS_FILE = "best.weights.h5"
DTYPE_POLICIES = {"fp32": None, "bf16": "mixed_bfloat16"}  # --mixed-precision -> Keras policy


def add_checkpoint_arguments(parser):
    """``--config --checkpoint --vocab --model --do-lower-case``."""
    parser.add_argument("--config", help="bert_config.json of a Google BERT/ALBERT checkpoint")
    parser.add_argument("--checkpoint", help="checkpoint prefix, e.g. .../bert_model.ckpt")
    parser.add_argument("--vocab", help="vocab.txt of the checkpoint")
    parser.add_argument("--model", default="bert", choices=["bert", "roberta", "albert"])
    parser.add_argument("--do-lower-case", action="store_true",
                        help="for uncased English models")


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


def check_fine_tuning_arguments(parser, args, checkpoint_optional=False):
    """Exits with a usage error on combinations and ranges argparse cannot express.

    Args:
        checkpoint_optional: skip the "--config, --checkpoint and --vocab go together"
            check (a script that can build a random model from ``--vocab`` alone).
    """
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


def dtype_policy(args):
    """The Keras dtype policy of ``--mixed-precision`` (None: the global policy)."""
    return DTYPE_POLICIES[args.mixed_precision]


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


def write_lines_atomically(path, lines):
    """Writes ``lines`` to ``path``, one a line, in UTF-8.

    The text goes to ``path + ".tmp"`` first and is renamed over ``path``, so a reader
    (or a rerun after a crash) sees the old file or the new one, never half of one; if
    ``lines`` raises, ``path`` is left as it was and the temporary file is removed.
    A missing parent folder is created.
    """
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp_path = path + ".tmp"
    try:
        with open(tmp_path, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def save_run(output_dir, run):
    """Writes ``run`` (what ``--predict`` needs to rebuild the model) atomically."""
    write_lines_atomically(os.path.join(output_dir, RUN_FILE),
                           [json.dumps(run, indent=2, ensure_ascii=False)])


def load_run(output_dir):
    """``(run dict, weights path)`` saved by a training run in ``output_dir``.

    Raises:
        FileNotFoundError: the run file or the weights are missing.
    """
    run_path = os.path.join(output_dir, RUN_FILE)
    weights_path = os.path.join(output_dir, WEIGHTS_FILE)
    for path in (run_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: train first (same --output-dir)")
    with open(run_path, encoding="utf-8") as f:
        return json.load(f), weights_path
