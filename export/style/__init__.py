"""Neural style transfer, training side: the Gram-matrix costs, the loss networks
(SqueezeNet 1.1, VGG19), the Gatys pixel optimiser (the teacher), the fast
feed-forward student network, its training and its export.

Nothing here runs at import time; TensorFlow is imported by the modules that need it.
"""
