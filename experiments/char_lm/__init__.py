"""The char_lm experiment: see config.py and train.py."""
