"""A word-count baseline on the byte classifier's exact split: how much the 256 bytes say.

Multinomial naive Bayes over the lowercase ASCII words (``[a-z]+``) of each example's bytes,
add-one smoothing, class priors from the training split. It reads the same
:class:`jrnn.data.ClassificationDataset` as the RNN (same articles, same split, same first
``seq_len`` bytes), so its test accuracy tells what a simple model gets from that input.

Usage (from the repository root)::

    python -m experiments.byte_classifier.baseline            # BBC News, seq_len 256, seed 0
    python -m experiments.byte_classifier.baseline --seq-len 1024
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

import jrnn.data as jd

_WORD = re.compile(rb"[a-z]+")


def words(tokens: np.ndarray, length: int) -> list[bytes]:
    """The lowercase ``[a-z]+`` words of the first ``length`` bytes of ``tokens``."""
    return _WORD.findall(np.asarray(tokens[:length], np.uint8).tobytes().lower())


def naive_bayes(
    train: jd.ClassificationDataset, test: jd.ClassificationDataset
) -> tuple[float, np.ndarray]:
    """``(test accuracy, predicted labels)`` of multinomial naive Bayes over words.

    Test words never seen in training are ignored; ties go to the lower class id.
    """
    k = len(train.class_names)
    vocab: dict[bytes, int] = {}
    rows = []
    for toks, n, y in zip(train.tokens, train.lengths, train.labels, strict=True):
        ids = [vocab.setdefault(w, len(vocab)) for w in words(toks, int(n))]
        rows.append((int(y), ids))
    counts = np.ones((k, len(vocab)))  # add-one smoothing
    for y, ids in rows:
        np.add.at(counts[y], ids, 1.0)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    log_prior = np.log(np.bincount(np.asarray(train.labels), minlength=k) / len(train.labels))
    pred = np.empty(len(test.labels), np.int64)
    for i, (toks, n) in enumerate(zip(test.tokens, test.lengths, strict=True)):
        ids = [vocab[w] for w in words(toks, int(n)) if w in vocab]
        pred[i] = int(np.argmax(log_prior + log_p[:, ids].sum(axis=1)))
    return float(np.mean(pred == np.asarray(test.labels))), pred


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=256, help="bytes read per article")
    p.add_argument("--seed", type=int, default=0, help="split seed (the experiments use 0)")
    args = p.parse_args(argv)
    train, test = jd.load_bbc(seq_len=args.seq_len, seed=args.seed)
    acc, pred = naive_bayes(train, test)
    right = int(np.sum(pred == np.asarray(test.labels)))
    print(
        f"naive Bayes on the words of the first {args.seq_len} bytes (BBC News, seed "
        f"{args.seed}): test accuracy {100 * acc:.2f} % ({right} / {len(test.labels)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
