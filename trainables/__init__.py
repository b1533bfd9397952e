"""What runs inside one trial: data, models, losses, regularizers, optimizers, metrics, the train loop.

This package never imports ``study`` or ``analysis``: the train loop is a plain function usable
without Ray (tests, benchmarks, notebooks); the Ray Tune trainable is a thin wrapper around it.
"""
