"""The sorter experiment: see config.py and train.py."""
