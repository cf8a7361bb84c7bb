"""bertkit: BERT fine-tuning in the bert4keras style, on Keras 3.

Importing the package registers every custom layer, optimizer and schedule with
Keras, so ``keras.models.load_model('m.keras')`` works after ``import bertkit``.
"""
__version__ = "0.1.0"

from bertkit import config  # noqa: F401
from bertkit import layers  # noqa: F401
from bertkit import models  # noqa: F401
from bertkit import checkpoints  # noqa: F401
from bertkit import data  # noqa: F401
from bertkit import pipelines  # noqa: F401
from bertkit import callbacks  # noqa: F401
from bertkit import tokenizers  # noqa: F401
from bertkit import heads  # noqa: F401
from bertkit import schedules  # noqa: F401
# The derived-optimizer base that both ema and optimizers build on.
from bertkit import _derived  # noqa: F401
from bertkit import ema  # noqa: F401
from bertkit import optimizers  # noqa: F401
from bertkit import pretraining  # noqa: F401
