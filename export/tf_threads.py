"""TensorFlow CPU thread limits for the training and optimisation commands."""

from __future__ import annotations

import sys


def set_threads(intra: int | None, inter: int | None = None) -> None:
    """Limit TensorFlow's CPU threads (intra-op ``intra``, inter-op ``inter`` or the
    same).  TensorFlow only accepts this before it has run anything; when called
    later (a command run twice from Python, as the tests do) the limit cannot change
    and a warning says so."""
    if intra is None:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(intra if inter is None else inter)
    except RuntimeError:
        print(f"warning: TensorFlow is already initialised; --threads {intra} has no effect",
              file=sys.stderr)
