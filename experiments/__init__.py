"""jrnn's experiments: the lecture's three task models, one package each.

Each ``experiments/<task>/`` has ``config.py`` (presets ``smoke``, ``cpu`` -- at most an hour
of one CPU core -- and ``full``; the sorter also ``cpu_t32``, ``cpu_t32_attention``,
``cpu_t64_attention``) and ``train.py`` (``train_and_evaluate(config, workdir)`` plus a thin
``main(argv)``); the classifier also has ``pretrain.py`` (language-model pre-training of both
directions) and ``baseline.py`` (word naive Bayes on the same split). Run them from the
repository root, e.g.
``python -m experiments.char_lm.train --config cpu --workdir runs/lm``.
"""
