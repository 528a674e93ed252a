"""The decoders, a package: one module per kind, each registered by the ``kind`` its manifests name.

- ``base``: ``DecoderConfig``, the registry (``DECODERS``, ``register_decoder``, ``decoder_class``), the Keras and
  NumPy base classes, the masked loss, the ``.keras`` reader;
- ``merge``: the merge model (pooled features meet the words after the LSTM);
- ``attention`` (+ ``attention_layers``, its Keras layer): soft attention over the encoder's grid;
- ``ensemble``: several members decoded as one (their next-word probabilities averaged);
- ``fusion``: a decoder fused with a language model trained on caption text (shallow fusion).

Importing it imports NumPy only: Keras is imported when a model is built, trained or loaded with Keras. Every
decoding strategy drives every kind through the same ``step(tokens, state) -> (log_probs, state)``.
"""

from .base import (DECODERS, DecoderConfig, KerasDecoder, NumpyDecoder, decoder_class, load_decoder, load_inference,
                   make_decoder, masked_loss, pad_captions, read_keras_weights, register_decoder, store_half,
                   teacher_forced_log_probs, teacher_forcing_pairs, weights_storage)
from .merge import MergeDecoder, MergeInference, build_merge_decoder
from .attention import AttentionDecoder, AttentionInference, build_attention_decoder
from .ensemble import EnsembleDecoder
from .fusion import FusedDecoder, vocabulary_map

__all__ = ["DECODERS", "AttentionDecoder", "AttentionInference", "DecoderConfig", "EnsembleDecoder", "FusedDecoder", "KerasDecoder",
           "MergeDecoder", "MergeInference", "NumpyDecoder", "build_attention_decoder", "build_merge_decoder",
           "decoder_class", "load_decoder", "load_inference", "make_decoder", "masked_loss", "pad_captions",
           "read_keras_weights", "register_decoder", "store_half", "teacher_forced_log_probs", "teacher_forcing_pairs",
           "vocabulary_map", "weights_storage"]
