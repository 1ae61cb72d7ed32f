"""A word-count baseline on the byte classifier's exact split: how much the 256 bytes say.

Multinomial naive Bayes over the lowercase ASCII words (``[a-z]+``) of each example's bytes,
add-one smoothing, class priors from the training split. It reads the same
:class:`jrnn.data.ClassificationDataset` as the RNN (same articles, same split, same first
``seq_len`` bytes), so its test accuracy tells what a simple model gets from that input.

Usage (from the repository root)::

    python -m experiments.byte_classifier.baseline            # BBC News, seq_len 256, seed 0
    python -m experiments.byte_classifier.baseline --seq-len 1024
    python -m experiments.byte_classifier.baseline --windows-per-article 8 --test-windows 8

With ``--windows-per-article k`` it trains on up to ``k`` 256-byte windows of each training
article (the RNN's ``windows_per_article``), with ``--test-windows m`` it predicts each test
article from up to ``m`` windows (the RNN's ``test_windows``): the argmax of the mean of the
windows' log-posteriors, as the RNN averages its windows' log-probabilities.
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
    """``(test accuracy, predicted labels)`` of multinomial naive Bayes over words, one
    prediction per test row.

    Test words never seen in training are ignored; ties go to the lower class id.
    """
    scores = naive_bayes_scores(train, test)
    pred = scores.argmax(axis=1)
    return float(np.mean(pred == np.asarray(test.labels))), pred


def naive_bayes_scores(
    train: jd.ClassificationDataset, test: jd.ClassificationDataset
) -> np.ndarray:
    """``[test rows, classes]`` normalised log-posteriors of multinomial naive Bayes over words
    (add-one smoothing, test words never seen in training ignored)."""
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
    scores = np.empty((len(test.labels), k))
    for i, (toks, n) in enumerate(zip(test.tokens, test.lengths, strict=True)):
        ids = [vocab[w] for w in words(toks, int(n)) if w in vocab]
        scores[i] = log_prior + log_p[:, ids].sum(axis=1)
    m = scores.max(axis=1, keepdims=True)
    return scores - (m + np.log(np.exp(scores - m).sum(axis=1, keepdims=True)))


def naive_bayes_windows(
    train: jd.ClassificationDataset, test: jd.ClassificationDataset
) -> tuple[float, float, np.ndarray]:
    """``(accuracy averaged over each test article's windows, first-window accuracy,
    per-article predictions)``; an article's rows are consecutive rows with the same id."""
    from experiments.byte_classifier.train import average_windows  # noqa: PLC0415

    lp = naive_bayes_scores(train, test)
    scores, first = average_windows(lp, test.ids, "log_prob")
    y = np.asarray(test.labels)[first]
    pred = scores.argmax(axis=1)
    return float(np.mean(pred == y)), float(np.mean(lp[first].argmax(axis=1) == y)), pred


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=256, help="bytes read per article")
    p.add_argument("--seed", type=int, default=0, help="split seed (the experiments use 0)")
    p.add_argument("--windows-per-article", type=int, default=1, help="training windows")
    p.add_argument("--test-windows", type=int, default=1, help="test windows averaged")
    args = p.parse_args(argv)
    train, test = jd.load_bbc(
        seq_len=args.seq_len,
        seed=args.seed,
        windows_per_article=args.windows_per_article,
        test_windows_per_article=args.test_windows,
    )
    if args.windows_per_article == 1 and args.test_windows == 1:
        acc, pred = naive_bayes(train, test)
        right = int(np.sum(pred == np.asarray(test.labels)))
        print(
            f"naive Bayes on the words of the first {args.seq_len} bytes (BBC News, seed "
            f"{args.seed}): test accuracy {100 * acc:.2f} % ({right} / {len(test.labels)})"
        )
        return 0
    acc, first, pred = naive_bayes_windows(train, test)
    print(
        f"naive Bayes on {args.seq_len}-byte windows (BBC News, seed {args.seed}; up to "
        f"{args.windows_per_article} per training article, {args.test_windows} per test "
        f"article): test accuracy {100 * acc:.2f} % averaged over the windows of "
        f"{len(pred)} articles, {100 * first:.2f} % from the first window alone"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
