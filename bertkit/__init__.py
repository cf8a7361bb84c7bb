"""bertkit: BERT fine-tuning in the bert4keras style, on Keras 3.

The names a user needs import from here::

    from bertkit import build_transformer_model, Tokenizer, DataGenerator

Importing the package registers every custom layer, optimizer and schedule with
Keras, so ``keras.models.load_model('m.keras')`` works after ``import bertkit``.
Imported before TensorFlow, it also turns on TensorFlow's oneDNN kernels on x86 CPUs
where TensorFlow leaves them off (``TF_ENABLE_ONEDNN_OPTS``; see ``bertkit._onednn``).
Each module documents the rest of what it owns (``bertkit.models``,
``bertkit.checkpoints``, ``bertkit.huggingface``, ...).
"""
__version__ = "0.1.0"

# Before anything imports TensorFlow: its oneDNN kernels, which bertkit's layers are
# written for, on every x86 CPU (TensorFlow's own default leaves them off on some).
from bertkit import _onednn

_onednn.enable_before_tensorflow_loads()

# The modules whose import registers Keras objects, in dependency order.
from bertkit import config  # noqa: F401
from bertkit import storage  # noqa: F401
from bertkit import layers  # noqa: F401
from bertkit import models  # noqa: F401
from bertkit import checkpoints  # noqa: F401
from bertkit import huggingface  # noqa: F401
from bertkit import data  # noqa: F401
from bertkit import pipelines  # noqa: F401
from bertkit import distribute  # noqa: F401
from bertkit import callbacks  # noqa: F401
from bertkit import tokenizers  # noqa: F401
from bertkit import schedules  # noqa: F401
# The derived-optimizer base that both ema and optimizers build on.
from bertkit import _derived  # noqa: F401
from bertkit import ema  # noqa: F401
from bertkit import optimizers  # noqa: F401
from bertkit import tasks  # noqa: F401

# The public API, each name from the module that defines it.
from bertkit.callbacks import AttentionImages, Evaluator, progress
from bertkit.checkpoints import (load_weights_from_checkpoint, save_checkpoint_dir,
                                 save_weights_as_checkpoint)
from bertkit.config import BertConfig
from bertkit.data import DataGenerator, pad_to_bucket, sequence_padding
from bertkit.ema import EMAEvaluation, extend_with_exponential_moving_average
from bertkit.huggingface import load_weights_from_safetensors, save_weights_as_safetensors
from bertkit.models import (Transformer, attention_model, build_transformer_model,
                            family_names, intermediate_model, register_family,
                            reinitialize_top_blocks)
from bertkit.optimizers import (Adam, extend_with_gradient_accumulation,
                                extend_with_layer_adaptation, extend_with_lazy_optimization,
                                extend_with_lookahead, extend_with_parameter_wise_lr,
                                extend_with_piecewise_linear_lr, extend_with_weight_decay,
                                fine_tuning_optimizer)
from bertkit.plots import save_training_plot
from bertkit.schedules import PiecewiseLinear, layerwise_lr_decay
from bertkit.distribute import distribute_batches, is_chief, make_strategy, predict_on_batch
from bertkit.resume import TrainingBackup, fit_epochs
from bertkit.storage import RunDirectory, atomic_write, save_weights_atomically
from bertkit.tasks import (ClassificationHead, ConditionalRandomField, CRFTaggingHead,
                           EfficientGlobalPointer, GlobalPointer, GlobalPointerHead,
                           LocalContext, SoftmaxTaggingHead, TaskHead, TripleExtractor,
                           entity_scores, global_pointer_loss, tags_to_spans)
from bertkit.tokenizers import Tokenizer, load_vocab, save_vocab

__all__ = [
    # models and checkpoints
    "build_transformer_model", "register_family", "family_names", "Transformer",
    "BertConfig", "intermediate_model", "attention_model", "reinitialize_top_blocks",
    "load_weights_from_checkpoint", "save_weights_as_checkpoint", "save_checkpoint_dir",
    "load_weights_from_safetensors", "save_weights_as_safetensors",
    # text and data
    "Tokenizer", "load_vocab", "save_vocab", "DataGenerator", "sequence_padding",
    "pad_to_bucket",
    # heads and training
    "TaskHead", "ClassificationHead", "SoftmaxTaggingHead", "CRFTaggingHead",
    "GlobalPointerHead", "ConditionalRandomField", "GlobalPointer", "EfficientGlobalPointer",
    "LocalContext", "global_pointer_loss", "tags_to_spans", "entity_scores", "TripleExtractor",
    "Evaluator", "progress",
    "EMAEvaluation",
    "AttentionImages", "save_training_plot",
    "Adam", "fine_tuning_optimizer", "PiecewiseLinear", "layerwise_lr_decay",
    "extend_with_weight_decay", "extend_with_layer_adaptation",
    "extend_with_piecewise_linear_lr", "extend_with_gradient_accumulation",
    "extend_with_lookahead", "extend_with_lazy_optimization",
    "extend_with_parameter_wise_lr", "extend_with_exponential_moving_average",
    # files that survive a kill, resumable training
    "RunDirectory", "atomic_write", "save_weights_atomically", "TrainingBackup", "fit_epochs",
    # several devices or machines
    "make_strategy", "distribute_batches", "is_chief", "predict_on_batch",
]
