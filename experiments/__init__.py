"""jrnn's experiments: the lecture's three task models, one package each.

Each ``experiments/<task>/`` has ``config.py`` (presets ``smoke``, ``cpu``, ``full``; the
classifier also ``long``, about an hour of one CPU core) and ``train.py``
(``train_and_evaluate(config, workdir)`` plus a thin ``main(argv)``); the classifier also has
``baseline.py`` (word naive Bayes on the same split). Run them from the repository root, e.g.
``python -m experiments.char_lm.train --config cpu --workdir runs/lm``.
"""
