"""The costs of neural style transfer, exactly as defined (Gatys et al.; the
notation of the deeplearning.ai course).

With ``a`` a layer's activations of shape ``(n_H, n_W, n_C)`` (one image;
the functions take a leading batch axis and return one value per image):

* content cost  ``J_content(C, G) = 1/2 * sum((a(C) - a(G))**2)`` at one layer;
* Gram matrix   ``G_kk' = sum_ij a_ijk * a_ijk'``  (un-normalised);
* layer style   ``J_style[l](S, G) = 1 / (2 n_H n_W n_C)**2 * sum_kk' (G(S) - G(G))**2``;
* style cost    ``J_style = sum_l lambda[l] * J_style[l]``;
* total         ``J = alpha * J_content + beta * J_style (+ gamma * TV(G))``.

``n_H, n_W, n_C`` are those of the generated image's activations.  Because the
Gram matrix is a sum over positions, ``G(S)`` must come from a style image of
the same size as ``G`` for the difference to mean anything; callers resize the
style image to the generated image's size (see ``optimize.style_image_for``).

All functions take and return TensorFlow tensors (or anything ``tf`` converts).
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf


def gram(a) -> tf.Tensor:
    """Gram matrices ``G_kk' = sum_ij a_ijk a_ijk'`` of ``a`` with shape (B, H, W, C) -> (B, C, C)."""
    a = tf.convert_to_tensor(a, tf.float32)
    return tf.einsum("bijk,bijl->bkl", a, a)


def content_cost(a_content, a_generated) -> tf.Tensor:
    """``1/2 * ||a(C) - a(G)||^2`` per image: (B, H, W, C) x2 -> (B,)."""
    d = tf.convert_to_tensor(a_content, tf.float32) - tf.convert_to_tensor(a_generated, tf.float32)
    return 0.5 * tf.reduce_sum(tf.square(d), axis=[1, 2, 3])


def layer_style_cost(gram_style, a_generated) -> tf.Tensor:
    """``1/(2 n_H n_W n_C)^2 * sum (G(S) - G(G))^2`` per image.

    Args:
        gram_style: Gram matrix of the style image at this layer, (C, C) or (B, C, C)
            (computed once: the style image does not change).
        a_generated: the generated image's activations, (B, n_H, n_W, n_C).
    """
    a = tf.convert_to_tensor(a_generated, tf.float32)
    shape = tf.shape(a)
    n = tf.cast(2 * shape[1] * shape[2] * shape[3], tf.float32)
    d = tf.convert_to_tensor(gram_style, tf.float32) - gram(a)
    return tf.reduce_sum(tf.square(d), axis=[1, 2]) / tf.square(n)


def style_cost(grams_style: Mapping[str, tf.Tensor], acts_generated: Mapping[str, tf.Tensor],
               weights: Mapping[str, float]) -> tf.Tensor:
    """``sum_l lambda[l] * J_style[l]`` per image over the layers named in ``weights``."""
    total = 0.0
    for name, lam in weights.items():
        total += float(lam) * layer_style_cost(grams_style[name], acts_generated[name])
    return total


def total_variation(images) -> tf.Tensor:
    """Smoothness prior ``sum (x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2`` per image (B,)."""
    x = tf.convert_to_tensor(images, tf.float32)
    dh = x[:, 1:, :, :] - x[:, :-1, :, :]
    dw = x[:, :, 1:, :] - x[:, :, :-1, :]
    return tf.reduce_sum(tf.square(dh), axis=[1, 2, 3]) + tf.reduce_sum(tf.square(dw), axis=[1, 2, 3])


def grain(images, pool: int = 16) -> tf.Tensor:
    """Fixed 2-pixel pattern per image (B,): a sub-pixel (pixel-shuffle) output writes
    each of the four pixels of a 2x2 block through its own weights, and an offset
    between them shows as a faint grid.  The loss network barely sees it (its first
    conv has stride 2) and TV at the usual weight is far too small to matter, so it is
    measured directly: the three 2x2 Nyquist components (horizontal, vertical,
    checkerboard) of every block, averaged over ``pool`` x ``pool`` blocks (32 x 32 px by
    default: the pattern repeats, real edges change sign and position and mostly
    average out), squared and summed.  On 256-px crops the released session-4 udnie
    student's outputs score ~1200, the photos themselves ~170."""
    x = tf.convert_to_tensor(images, tf.float32)
    h, w = tf.shape(x)[1] // 2 * 2, tf.shape(x)[2] // 2 * 2
    x = x[:, :h, :w, :]  # whole 2x2 blocks only (an odd last row/column is dropped)
    a, b = x[:, 0::2, 0::2, :], x[:, 0::2, 1::2, :]
    c, d = x[:, 1::2, 0::2, :], x[:, 1::2, 1::2, :]
    parts = [(a - b + c - d) / 4, (a + b - c - d) / 4, (a - b - c + d) / 4]
    total = 0.0
    for q in parts:
        m = tf.nn.avg_pool2d(q, pool, pool, "VALID")
        total = total + tf.reduce_sum(tf.square(m), axis=[1, 2, 3])
    return total


def total_cost(j_content, j_style, alpha: float, beta: float, j_tv=0.0,
               gamma: float = 0.0) -> tf.Tensor:
    """``J = alpha * J_content + beta * J_style + gamma * TV``."""
    return alpha * j_content + beta * j_style + gamma * j_tv
