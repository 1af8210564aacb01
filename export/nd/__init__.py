"""1D and 3D encoders through the same pipeline as the face encoder.

Two small, honest examples (both data sets are synthetic, and say so):

* ``speech``: speaker verification on utterances synthesised by espeak-ng
  with ~60 voice variants (each variant + accent + pitch is one "speaker");
  features are log-mel spectrograms, a 1D signal of (frames, mel bins).
* ``clips``: identity verification on short grey clips (frames, h, w, 1)
  built from AT&T/ORL photos by cross-fading two photos of one person under
  a drifting shift, so each clip has motion and a change of expression.
"""
