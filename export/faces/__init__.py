"""Face encoder training, evaluation and export (``python -m export faces ...``).

Modules: ``data`` (detect + align cache, held-out pairs, augmentation),
``teacher`` (dlib ResNet embeddings for distillation), ``model`` (the
MobileFaceNet-like encoder and pair heads), ``losses`` (triplet mining,
distillation), ``train``, ``evaluate`` and ``release`` (export + model card).
"""
