"""Keras layers of the custom ViT (``vit_custom``), registered serializable so bundles load in
Keras safe mode. Importing this module imports Keras; ``caption_core`` imports it only when a
``vit_custom`` encoder is built or loaded."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="caption_core")
class PatchEmbedding(layers.Layer):
    """(B, H, W, C) -> (B, 1 + N, dim): one token per patch_size x patch_size patch, a learned class
    token in front, learned position embeddings added.

    ``stem='linear'``: the classic ViT projection (one strided convolution = a linear map of each
    patch). ``stem='conv'``: a small stack of 3x3 convolutions with the same total stride (Xiao et
    al. 2021, "Early convolutions help transformers see better"): same tokens, much faster
    training from scratch on small data.
    """

    def __init__(self, patch_size: int, dim: int, stem: str = "linear", **kwargs):
        super().__init__(**kwargs)
        if stem not in ("linear", "conv"):
            raise ValueError(f"stem must be 'linear' or 'conv', got {stem!r}")
        if stem == "conv" and patch_size & (patch_size - 1):
            raise ValueError(f"stem 'conv' needs a power-of-two patch_size, got {patch_size}")
        self.patch_size, self.dim, self.stem = patch_size, dim, stem
        if stem == "linear":
            self.convs = [layers.Conv2D(dim, patch_size, strides=patch_size, name="proj")]
        else:
            n_down = patch_size.bit_length() - 1
            widths = [max(dim // 2 ** (n_down - i), 16) for i in range(n_down)]
            self.convs = [layers.Conv2D(max(dim // 2 ** n_down, 16), 3, padding="same", use_bias=False, name="stem_0"),
                          layers.BatchNormalization(name="stem_bn_0"), layers.ReLU()]
            for i, w in enumerate(widths, start=1):
                self.convs += [layers.Conv2D(w, 3, strides=2, padding="same", use_bias=False, name=f"stem_{i}"),
                               layers.BatchNormalization(name=f"stem_bn_{i}"), layers.ReLU()]
            self.convs.append(layers.Conv2D(dim, 1, name="proj"))

    def build(self, input_shape):
        h, w = input_shape[1] // self.patch_size, input_shape[2] // self.patch_size
        self.num_patches = h * w
        shape = input_shape
        for layer in self.convs:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.cls_token = self.add_weight(shape=(1, 1, self.dim), initializer="zeros", name="cls_token")
        self.position = self.add_weight(shape=(1, 1 + self.num_patches, self.dim),
                                        initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="position")

    def call(self, images, training=None):
        x = images
        for layer in self.convs:
            x = layer(x, training=training) if isinstance(layer, layers.BatchNormalization) else layer(x)  # (B, h, w, dim) at the end
        x = ops.reshape(x, (-1, self.num_patches, self.dim))  # (B, N, dim)
        cls = ops.broadcast_to(self.cls_token, (ops.shape(x)[0], 1, self.dim))  # (B, 1, dim)
        return ops.concatenate([cls, x], axis=1) + self.position  # (B, 1 + N, dim)

    def compute_output_shape(self, input_shape):
        n = (input_shape[1] // self.patch_size) * (input_shape[2] // self.patch_size)
        return (input_shape[0], 1 + n, self.dim)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "dim": self.dim, "stem": self.stem}


@keras.saving.register_keras_serializable(package="caption_core")
class TransformerBlock(layers.Layer):
    """Pre-norm block: x + drop_path(MHA(LN(x))); x + drop_path(MLP(LN(x))). (B, T, dim) -> same."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0, drop_path: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_dim, self.dropout, self.drop_path = dim, heads, mlp_dim, dropout, drop_path
        self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1")
        self.attn = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout, name="attn")
        self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2")
        self.fc1 = layers.Dense(mlp_dim, activation="gelu", name="fc1")
        self.fc2 = layers.Dense(dim, name="fc2")
        self.drop = layers.Dropout(dropout)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attn.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.mlp_dim))

    def _drop_path(self, x, training):
        if not training or self.drop_path <= 0:
            return x
        keep = 1.0 - self.drop_path
        shape = (ops.shape(x)[0], 1, 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=None))
        return x * mask / keep

    def call(self, x, training=None):
        y = self.norm1(x)
        x = x + self._drop_path(self.attn(y, y, training=training), training)  # (B, T, dim)
        y = self.fc2(self.drop(self.fc1(self.norm2(x)), training=training))
        return x + self._drop_path(self.drop(y, training=training), training)  # (B, T, dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_dim": self.mlp_dim,
                "dropout": self.dropout, "drop_path": self.drop_path}


@keras.saving.register_keras_serializable(package="caption_core")
class ClassToken(layers.Layer):
    """(B, T, dim) -> (B, dim): the first (class) token."""

    def call(self, x):
        return x[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


# CIFAR-10 channel statistics, used to normalise inputs inside the model
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def build_vit_backbone(image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_dim: int,
                       dropout: float = 0.0, drop_path: float = 0.0, stem: str = "linear") -> keras.Model:
    """uint8-valued images (B, S, S, 3) -> class-token features (B, dim)."""
    images = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Normalization(mean=CIFAR_MEAN, variance=[s * s for s in CIFAR_STD], name="normalize")(images)
    x = PatchEmbedding(patch_size, dim, stem, name="patch_embedding")(x)  # (B, 1 + N, dim)
    for i in range(depth):
        rate = drop_path * i / max(1, depth - 1)  # linearly increasing stochastic depth
        x = TransformerBlock(dim, heads, mlp_dim, dropout, rate, name=f"block_{i}")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    features = ClassToken(name="class_token")(x)  # (B, dim)
    return keras.Model(images, features, name="vit_custom")
