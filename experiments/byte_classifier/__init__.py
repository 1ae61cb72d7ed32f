"""The byte_classifier experiment: see config.py and train.py."""
