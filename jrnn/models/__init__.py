"""The lecture's three task models as Flax NNX modules, and their losses.

``ByteClassifier`` (many-to-one), ``CharLM`` (many-to-many, with text generation) and ``Sorter``
(many-to-one-to-many, encoder-decoder with greedy and beam-search decoding). The loss functions
for ``jrnn.train.fit`` are in ``jrnn.models.losses``. Importing this package imports flax
(``import jrnn`` alone does not). See docs/models.md.
"""

from jrnn.models import losses
from jrnn.models.byte_classifier import ByteClassifier
from jrnn.models.char_lm import CharLM
from jrnn.models.losses import char_lm_loss, classifier_loss, sorter_loss
from jrnn.models.sorter import Sorter

__all__ = [
    "ByteClassifier",
    "CharLM",
    "Sorter",
    "char_lm_loss",
    "classifier_loss",
    "losses",
    "sorter_loss",
]
