"""Tasks: heads on the encoder's output, each task one module with its loss and decoding.

Every task is a ``keras.Model`` built from an encoder by a head's
:meth:`~bertkit.tasks.base.TaskHead.attach` (``[Input-Token, Input-Segment, *conditions]``
in, the head's output out), and :class:`bertkit.callbacks.Evaluator` scores any of them
after each epoch, on the moving-average weights when the optimizer keeps them.

- :mod:`bertkit.tasks.base`: the :class:`TaskHead` contract;
- :mod:`bertkit.tasks.classification`: :class:`ClassificationHead`;
- :mod:`bertkit.tasks.tagging`: sequence labelling (softmax, CRF and GlobalPointer heads),
  with their layers in :mod:`bertkit.tasks.crf` and :mod:`bertkit.tasks.global_pointer`;
- :mod:`bertkit.tasks.spans`: tag schemes (BIO, IOB2, BIOES) and entity scores;
- :mod:`bertkit.tasks.triples`: subject-predicate-object extraction;
- :mod:`bertkit.tasks.pretraining`: masked-LM pretraining.
"""
from bertkit.tasks import (base, classification, crf, global_pointer, pretraining,  # noqa: F401
                           spans, tagging, triples)
from bertkit.tasks.base import TaskHead, masked_mean, padding_mask_of
from bertkit.tasks.classification import ClassificationHead
from bertkit.tasks.spans import entity_scores, tags_to_spans
from bertkit.tasks.crf import ConditionalRandomField
from bertkit.tasks.global_pointer import EfficientGlobalPointer, GlobalPointer, global_pointer_loss
from bertkit.tasks.tagging import (CRFTaggingHead, GlobalPointerHead, LocalContext,
                                   SoftmaxTaggingHead, TaggingHead)
from bertkit.tasks.triples import TripleExtractor

__all__ = ["TaskHead", "masked_mean", "padding_mask_of", "ClassificationHead",
           "TaggingHead", "SoftmaxTaggingHead", "CRFTaggingHead", "GlobalPointerHead",
           "ConditionalRandomField", "GlobalPointer", "EfficientGlobalPointer", "LocalContext",
           "global_pointer_loss", "tags_to_spans", "entity_scores", "TripleExtractor"]
