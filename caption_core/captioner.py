"""``Captioner``: image(s) in, captions with scores and timings out."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from .decoding import Constraint, get_strategy
from .encoders.base import class_probabilities, top_probabilities
from .images import DEFAULT_LIMITS, ImageLimits, load_image
from .text import END_ID, START_ID, Vocabulary, clean_caption


@dataclasses.dataclass
class Caption:
    text: str  # the caption, words joined by spaces
    score: float  # what the strategy ranked by (length-normalised log-probability where asked)
    log_prob: float  # total log-probability of the words and <end>
    tokens: list[int]  # generated ids (<end> included when emitted)
    agreement: float | None = None  # with consensus decoding: its expected agreement with the beams' captions, [0, 1]


@dataclasses.dataclass
class Explanation:
    caption: str  # the caption explained
    words: list[str]  # its words (<end> excluded)
    probabilities: np.ndarray  # (T,) the model's probability of each word given the photo
    heat: np.ndarray  # (T, rows, cols) >= 0: how much each word's log-probability drops when that patch is greyed
    # ('occlusion'), or the attention decoder's weights over the grid cells for that word ('attention')
    method: str = "occlusion"  # 'occlusion' (the photo re-encoded once per patch) or 'attention' (no extra pass)


@dataclasses.dataclass
class CaptionResult:
    captions: list[Caption]  # best first
    encode_ms: float  # encoder time for this call, per image
    decode_ms: float  # decoding time for this call, per image
    labels: list[tuple[str, float]] | None = None  # the encoder's own top-5 ImageNet classes, where it has a head
    guidance: dict | None = None  # guided decoding: the word required, its class and probability, the words banned,
    # who put it in (classifier, detector or both), the detector's main object and its count
    attention: dict | None = None  # attention decoders: where it looked for each word of the best caption:
    # {"words": [w1..wT], "grid": [rows, cols], "maps": (T, rows, cols) nested lists, "outside": (T,) the weight on
    # non-spatial tokens (DINOv2's CLS)}; maps + outside sum to 1 per word; an ensemble's are its attention member's
    # ("member": its name)
    objects: dict | None = None  # what the COCO detector saw: {"detections": [{category, score, box (x0, y0, x1, y1)
    # as fractions)}], "counts": {category: n}, "main": the largest one's category}; None without a detector
    detect_ms: float = 0.0  # detector time for this call, per image
    object_words: list[str] | None = None  # a decoder that reads object words: the ones it read for this photo
    # ('coco:<category>' from the detector, 'imagenet:<word>' from the classifier); None for other decoders
    words_alone: bool = False  # an ensemble's object-word members read those words without the photo: an unfamiliar
    # scene (caption_core.decoders.ensemble.SceneConfig)


def default_detector():
    """The process's shared COCO detector (``caption_core.detectors.shared_detector``), or None where it cannot be had."""
    from .detectors import shared_detector

    return shared_detector()


class Captioner:
    """An encoder, a decoder and their vocabulary; and the object detector whose findings come with each caption
    and may guide it (``detector``: a ``caption_core.detectors.Detector``, None for none, or a function returning
    one or None, called on first use: by default the process's shared COCO detector)."""

    def __init__(self, encoder, decoder, vocab: Vocabulary, manifest: dict | None = None, name: str | None = None,
                 detector=default_detector):
        self.encoder, self.decoder, self.vocab = encoder, decoder, vocab
        self._detector = detector
        self._detector_words = None
        self.manifest = manifest or {}
        self.name = name or self.manifest.get("name") or encoder.name
        default = self.manifest.get("default_decoding") or {}
        self.default_strategy: str = get_strategy(default.get("strategy", "beam")).name
        # every strategy starts from these (each reads the keys it knows): the bundle's tuned options
        self.default_options: dict = {"max_length": decoder.config.max_length - 1, **default.get("options", {})}
        # a language-only baseline was trained on zeroed features: it must be run on zeros too
        self.blind = bool(self.manifest.get("training", {}).get("blind", False))
        self._word_map = None
        from .object_words import ObjectWords

        # a decoder that reads object words beside the features: what computes them (None for the others), over the
        # vocabulary its members were trained on (an ensemble over a union of vocabularies keeps it: ``word_vocab``)
        own = getattr(decoder, "word_vocab", None)
        self.object_words = None if not decoder.config.object_words else \
            ObjectWords.for_decoder(decoder.config, own) if own is not None else \
            ObjectWords.for_decoder(decoder.config, vocab, self.word_map)  # (the guidance's word map, read once)

    @property
    def detector(self):
        """The object detector, or None (resolved on first use)."""
        if callable(self._detector) and not hasattr(self._detector, "detect_arrays"):
            self._detector = self._detector()
        return self._detector

    @property
    def detector_words(self):
        """COCO categories -> this vocabulary's words (guided decoding with the detector), read on first use."""
        if self._detector_words is None:
            from .guidance import DetectorWords

            self._detector_words = DetectorWords(self.vocab)
        return self._detector_words

    def detect(self, inputs: Sequence[Any]) -> list:
        """The detector's ``Objects`` for each photo (``inputs``: PIL images, or the detector's prepared arrays);
        None per photo without a detector."""
        det = self.detector
        if det is None or not len(inputs):
            return [None] * len(inputs)
        arrays = [x if isinstance(x, np.ndarray) else det.prepare(x) for x in inputs]
        return det.detect_arrays(np.stack(arrays))

    @property
    def word_map(self):
        """ImageNet classes -> this vocabulary's words (guided decoding), read on first use."""
        if self._word_map is None:
            from .guidance import WordMap

            self._word_map = WordMap(self.vocab)
        return self._word_map

    def class_probabilities(self, features: np.ndarray, images: Sequence[Any] | None = None) -> np.ndarray:
        """ImageNet class probabilities (N, 1000): from the encoder's own classifier head on ``features`` where it
        has one (no second forward pass), else from the tagger (``caption_core.guidance.tagger``: one
        EfficientNet-Lite0 forward pass over ``images``, PIL images as ``load_image`` gives them)."""
        logits = self.encoder.imagenet_logits(features) if self.encoder.has_imagenet_head else None
        if logits is None:
            if images is None:
                raise ValueError(f"encoder {self.encoder.name!r} has no ImageNet classifier: guided decoding of "
                                 "features alone needs the images too (caption() passes them)")
            from .guidance import tagger

            t = tagger()
            logits = t.classify(t.preprocess(list(images)))  # (N, 1000)
        return class_probabilities(logits)  # (N, 1000)

    @classmethod
    def from_bundle(cls, ref: str, encoder_options: dict | None = None, shared_encoders: dict | None = None,
                    detector=default_detector) -> "Captioner":
        """``encoder_options``: run-time encoder config overrides, e.g. ``{"precision": "float32"}``;
        ``shared_encoders``: see ``load_bundle``; ``detector``: see the class."""
        from .bundle import load_bundle

        manifest, encoder, decoder, vocab, _ = load_bundle(ref, encoder_options, shared_encoders)
        return cls(encoder, decoder, vocab, manifest, detector=detector)

    # -- the parts --------------------------------------------------------------------------
    def encode(self, images: Sequence[Any], limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        return self.encoder.encode(images, limits)  # (N, D)

    def decode(self, features: np.ndarray, strategy: str | None = None, options: dict | None = None,
               guidance: list | None = None, objects: list | None = None, class_probs: np.ndarray | None = None,
               **overrides) -> list[list[Caption]]:
        """features (N, D) -> for each image, its captions best first. ``options`` replace the bundle's
        defaults, ``overrides`` set single ones (``beam_width=5``); see ``caption_core.decoding``. A guided
        strategy takes each image's ``Guidance`` (``guide``), computed here from the encoder's classifier
        (and the detector's ``objects`` of each image, where given) when not given. A decoder that reads object
        words needs ``objects`` (per image, None where the detector found nothing to go on) and reads the classifier
        from ``class_probs`` (N, 1000), else from the encoder's head."""
        s, opts = self.decoding(strategy, options, **overrides)
        features = np.asarray(features, dtype=np.float32)
        if (s.guided and guidance is None) or (self.object_words is not None and class_probs is None):
            class_probs = self.class_probabilities(features)
        words = None
        if self.object_words is not None:
            if objects is None:
                raise ValueError(f"bundle {self.name!r} reads the detector's object words beside the features: pass "
                                 "each photo's objects (Captioner.detect), or caption the photos themselves")
            words = self.object_words.photo_vectors(class_probs, objects, len(features))
        if s.guided and guidance is None:
            guidance = self.guide(class_probs, opts, objects, words)
        return self._decode(features, s, opts, guidance, words)

    def _decode(self, features: np.ndarray, s, opts, guidance: list | None,
                words: np.ndarray | None = None) -> list[list[Caption]]:
        """``decode`` once the strategy and its options are checked (``caption`` checks them once for both);
        ``words`` (N, W): the object words a decoder that reads them gets after the features."""
        extra = {}
        if getattr(opts, "no_repeat_within", 0):
            extra["repeatable"] = self.vocab.repeatable()
        if s.guided:
            extra["constraints"] = [None if g is None else Constraint(frozenset(g.required_ids), frozenset(g.banned_ids))
                                    for g in guidance]
        if self.blind:
            features = np.zeros_like(features)
        features = self.decoder_inputs(features, words)
        with self.decoder.blas_threads(len(features)):
            state = self.decoder.initial_state(features)
            hyps = s.run(self.decoder.step, state, len(features), opts, **extra)
        return [[Caption(self.vocab.decode(h.tokens), h.score, h.log_prob, h.tokens, h.agreement) for h in per]
                for per in hyps]

    def decoder_inputs(self, features: np.ndarray, words: np.ndarray | None) -> np.ndarray:
        """What the decoder reads: the features (N, D), then the object words (N, W) where it reads them."""
        if self.object_words is None:
            return features
        if words is None or len(words) != len(features):
            raise ValueError(f"bundle {self.name!r} reads object words: one (W,) vector per photo is needed")
        return np.concatenate([features, np.asarray(words, np.float32)], axis=1)  # (N, D + W)

    def guide(self, class_probs: np.ndarray, opts, objects: list | None = None,
              words: np.ndarray | None = None) -> list:
        """Per image, what guides its caption (``caption_core.guidance.Guidance``) or None: the classifier's
        reading, and the detector's ``objects`` (per image, or None) where the options use the detector.
        ``words``: the photos' object words (N, W), where already read (``unfamiliar``)."""
        with_detector = objects is not None and (opts.guide_detector < 1.0 or opts.guide_unseen)
        scenes = self.unfamiliar(class_probs, objects, words) if opts.guide_unseen and with_detector else None
        return self.word_map.guidance(class_probs, opts.guide_threshold, opts.guide_veto, veto_alone=opts.guide_veto_alone,
                                      objects=objects if with_detector else None,
                                      detector_words=self.detector_words if with_detector else None,
                                      detector_threshold=opts.guide_detector, detector_first=opts.guide_detector_first,
                                      count=opts.guide_count, unseen=opts.guide_unseen, unseen_rows=scenes)

    def unfamiliar(self, class_probs: np.ndarray, objects: list, words: np.ndarray | None = None) -> np.ndarray | None:
        """(N,) bool: the photos of a scene this bundle's photo members never saw (an ensemble with unfamiliar
        scenes: ``caption_core.decoders.ensemble.SceneConfig``), or None where the bundle cannot tell. ``words``:
        their object words (N, W) where already read, else read here from ``class_probs`` and ``objects``."""
        if self.object_words is None or getattr(self.decoder, "scenes", None) is None:
            return None
        if words is None:
            words = self.object_words.photo_vectors(class_probs, objects, len(class_probs))  # (N, W)
        return self.decoder.unfamiliar(words)

    def decoding(self, strategy: str | None = None, options: dict | None = None, **overrides):
        """-> (the strategy, its checked options): ``options`` (default: the bundle's tuned ones) with
        ``overrides`` on top; keys that belong to other strategies are ignored, unknown keys raise."""
        s = get_strategy(strategy or self.default_strategy)
        return s, s.make_options({**(self.default_options if options is None else options), **overrides})

    def caption(self, images: Sequence[Any] | Any, strategy: str | None = None, options: dict | None = None,
                limits: ImageLimits = DEFAULT_LIMITS, maps: bool = True, objects: list | None = None,
                detect: bool = True, **overrides) -> list[CaptionResult]:
        """Caption one image or a list; every input goes through ``load_image`` (clear errors). ``maps``: an
        attention decoder's maps of the best caption (``CaptionResult.attention``; False: skip them). ``objects``:
        the detector's ``Objects`` of each image, already found (Compare finds them once for every bundle);
        ``detect=False``: no detector pass (then no objects, and guidance by the classifier alone)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            return []
        t0 = time.perf_counter()
        pil = [load_image(im, limits) for im in images]
        return self.caption_arrays(self.encoder.preprocess(pil), pil, strategy, options, maps, t0=t0,
                                   detections=pil if detect and objects is None else None, objects=objects,
                                   **overrides)

    def prepare(self, image: Any, limits: ImageLimits = DEFAULT_LIMITS, name: str | None = None,
                detect: bool = True) -> tuple[np.ndarray, Any, Any]:
        """One photo as ``caption_arrays`` takes it: (its (S, S, 3) uint8 array, the PIL image where guided decoding
        may need the tagger (an encoder without an ImageNet head) else None, the detector's input array where there
        is a detector and ``detect`` else None). ImageError for a bad photo. Batch jobs run this in reader threads
        while the encoder works. ``name``: what an error calls the photo."""
        img = load_image(image, limits, name=name)
        det = self.detector if detect else None
        return (self.encoder.preprocess([img])[0], (None if self.encoder.has_imagenet_head else img),
                det.prepare(img) if det is not None else None)

    def caption_arrays(self, batch: np.ndarray, pil: Sequence[Any] | None = None, strategy: str | None = None,
                       options: dict | None = None, maps: bool = True, t0: float | None = None,
                       detections: Sequence[Any] | None = None, objects: list | None = None,
                       **overrides) -> list[CaptionResult]:
        """``caption`` of photos already prepared: ``batch`` (N, S, S, 3) uint8 as ``encoder.preprocess`` gives it;
        ``pil`` the PIL images (only read by guided decoding with an encoder that has no ImageNet head);
        ``detections``: per photo what the detector reads (its prepared array, or the PIL image), None for no
        detector pass; ``objects``: its findings, where already known."""
        t0 = time.perf_counter() if t0 is None else t0
        s, opts = self.decoding(strategy, options, **overrides)
        t_detect = time.perf_counter()
        if objects is None and detections is not None:
            objects = self.detect(list(detections))
        t_detect = time.perf_counter() - t_detect  # the detector's share of the time
        feats = self.encoder.encode_arrays(batch)  # (N, D)
        guidance, probs, words = None, None, None
        if s.guided or self.object_words is not None:  # the classifier's reading (the tagger's where it has no head)
            probs = self.class_probabilities(feats, pil)
        if self.object_words is not None:  # without a detector pass: the classifier's words alone
            words = self.object_words.photo_vectors(probs, objects, len(feats))
        if s.guided:
            guidance = self.guide(probs, opts, objects, words)
        t1 = time.perf_counter()
        per_image = self._decode(np.asarray(feats, np.float32), s, opts, guidance, words)
        t2 = time.perf_counter()
        # the classes guidance already computed (the head, or the tagger), else the head alone where there is one
        labels = (top_probabilities(probs, 5) if probs is not None else self.encoder.imagenet_labels(feats)) \
            or [None] * len(per_image)
        described = [None] * len(per_image) if guidance is None else [
            None if g is None else {**g.describe(), "met": g.satisfied_by(c[0].tokens) if c else False}
            for g, c in zip(guidance, per_image)]
        maps = self.attention_maps(feats, [c[0].tokens if c else [] for c in per_image]) if maps and self.attends \
            else [None] * len(per_image)
        n = len(per_image)
        found = objects if objects is not None else [None] * n
        read = [None] * n if words is None else [self.object_words.names(w) for w in words]
        alone = self.unfamiliar(probs, objects, words) if words is not None else None
        alone = np.zeros(n, bool) if alone is None else alone
        return [CaptionResult(c, (t1 - t0 - t_detect) * 1000 / n, (t2 - t1) * 1000 / n, lab, gd, m,
                              None if o is None else o.to_dict(), t_detect * 1000 / n, r, bool(a))
                for c, lab, gd, m, o, r, a in zip(per_image, labels, described, maps, found, read, alone)]

    @property
    def attends(self) -> bool:
        """True for an attention decoder over a grid, or an ensemble with one among its members: its captions come
        with maps of where it (that member) looked."""
        return self._attention_source() is not None

    def _attention_source(self):
        """(decoder, encoder, feature slice or None, member name or None, member index or None) of the maps a caption
        shows: the decoder itself, or an ensemble's first attention member on its encoder's grid (labelled by its
        bundle)."""
        if getattr(self.encoder, "grid_shape", None) is not None and hasattr(self.decoder, "attention_maps"):
            return self.decoder, self.encoder, None, None, None
        members, encoders = getattr(self.decoder, "members", None), getattr(self.encoder, "members", None)
        if members and encoders and len(members) == len(encoders):
            refs = (self.manifest.get("decoder") or {}).get("members") or []
            built = (self.manifest.get("training") or {}).get("ensemble") or []  # what it was assembled from
            for i, (m, enc, sl) in enumerate(zip(members, encoders, self.decoder.slices)):
                if hasattr(m, "attention_maps") and getattr(enc, "grid_shape", None) is not None:
                    name = next((e.get("bundle") for e in (refs[i:i + 1] + built[i:i + 1]) if e.get("bundle")), None)
                    return m, enc, sl, name or f"member {i + 1} ({enc.name})", i
        return None

    def attention_maps(self, features: np.ndarray, captions: list[list[int]]) -> list[dict]:
        """Per image, the decoder's weights over the grid for each word of ``captions[i]`` (generated ids, <end>
        last where emitted): the same step decoding ran, once more over the caption's words, no encoder pass. An
        ensemble's come from its attention member (on its slice of the features; ``"member"`` names it)."""
        decoder, encoder, sl, member, index = self._attention_source()
        rows, cols, _ = encoder.grid_shape
        extra = encoder.grid_extra
        words = [[t for t in ids if t != END_ID] for ids in captions]
        length = max(len(w) for w in words) + 1
        tokens = np.zeros((len(words), length), np.int64)  # (N, T+1): <start> w1 .. wT, padded
        tokens[:, 0] = START_ID
        for i, w in enumerate(words):
            tokens[i, 1:len(w) + 1] = w
        feats = np.zeros_like(features, np.float32) if self.blind else np.asarray(features, np.float32)
        if sl is not None:
            feats = feats[:, sl[0]:sl[1]]  # the member's share
        if index is not None:  # an ensemble's member reads its own ids (its vocabulary may not be the ensemble's)
            tokens = self.decoder.member_tokens(index, tokens)
        with self.decoder.blas_threads(len(feats)):
            alpha = decoder.attention_maps(feats, tokens)  # (N, T, cells): weights that chose word t
        out = []
        for i, w in enumerate(words):
            a = alpha[i, :len(w)]  # (T_i, cells)
            out.append({"words": [self.vocab.id_to_word[t] for t in w], "grid": [rows, cols],
                        "maps": a[:, extra:].reshape(len(w), rows, cols).round(5).tolist(),
                        "outside": a[:, :extra].sum(axis=1).round(5).tolist(), **({"member": member} if member else {})})
        return out

    def word_log_probs(self, features: np.ndarray, caption: str,
                       object_words: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
        """The probability the model gives each word of ``caption`` (and <end>) for each image.

        features (N, D) -> words (T,), log-probs (N, T) with T = words + 1 (the last is <end>). ``object_words``
        (N, W): what a decoder that reads object words is given (``ObjectWords.photo_vectors``).
        """
        ids = self.vocab.encode(clean_caption(caption))  # [<start>, ..., <end>]
        tokens = np.tile(np.asarray(ids, np.int32), (len(features), 1))  # (N, T+1)
        words = [self.vocab.id_to_word[i] for i in ids[1:]]
        features = np.asarray(features, np.float32)
        if self.blind:
            features = np.zeros_like(features)
        features = self.decoder_inputs(features, object_words)
        with self.decoder.blas_threads(len(features)):
            return words, self.decoder.token_log_probs(features, tokens)  # (N, T)

    def explain(self, image: Any, caption: str | None = None, grid: int = 7,
                limits: ImageLimits = DEFAULT_LIMITS) -> Explanation:
        """Occlusion map per word: grey out each of ``grid`` x ``grid`` patches in turn and measure how much
        each word's log-probability drops. Without ``caption``, explains the bundle's default caption of the
        photo (decoded from the same forward pass: the photo is encoded once, with its occluded copies)."""
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        if self.attends:  # the decoder's own maps: one encoder pass, as for a caption
            return self._explain_attention(image, caption, limits)
        photo = load_image(image, limits)
        base = self.encoder.preprocess([photo])[0]  # (S, S, 3), exactly as caption() prepares it
        edges = np.linspace(0, base.shape[0], grid + 1).astype(int)
        batch = [base]
        for i in range(grid):
            for j in range(grid):
                occluded = base.copy()
                occluded[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = 127
                batch.append(occluded)
        feats = self.encoder.encode_arrays(np.stack(batch))  # (1 + g*g, D); row 0 is the photo itself
        probs, objects, read = self._photo_words(photo, feats[:1])  # kept for every occluded copy
        if not caption:
            caption = self.decode(feats[:1], objects=objects, class_probs=probs)[0][0].text
        words, lp = self.word_log_probs(feats, caption, None if read is None else np.repeat(read, len(feats), 0))
        if len(words) < 2:
            raise ValueError("nothing to explain: the caption has no words in the vocabulary")
        drop = np.maximum(lp[:1] - lp[1:], 0.0)[:, :-1]  # (g*g, T): how much each patch mattered to each word
        return Explanation(caption, words[:-1], np.exp(lp[0, :-1]), drop.T.reshape(len(words) - 1, grid, grid))

    def _photo_words(self, photo: Any, features: np.ndarray) -> tuple:
        """One photo's (class probabilities (1, 1000), detector objects, object words (1, W)) for a decoder that
        reads object words; (None, None, None) for the others."""
        if self.object_words is None:
            return None, None, None
        probs, objects = self.class_probabilities(features, [photo]), self.detect([photo])
        return probs, objects, self.object_words.photo_vectors(probs, objects, 1)

    def _explain_attention(self, image: Any, caption: str | None, limits: ImageLimits) -> Explanation:
        """``explain`` for an attention decoder: the weights it gave the grid cells for each word."""
        photo = load_image(image, limits)
        feats = self.encode([photo], limits)  # (1, D)
        probs, objects, read = self._photo_words(photo, feats)
        if not caption:
            caption = self.decode(feats, objects=objects, class_probs=probs)[0][0].text
        words, lp = self.word_log_probs(feats, caption, read)  # (1, T + 1)
        if len(words) < 2:
            raise ValueError("nothing to explain: the caption has no words in the vocabulary")
        (maps,) = self.attention_maps(feats, [self.vocab.encode(clean_caption(caption))[1:]])
        return Explanation(caption, words[:-1], np.exp(lp[0, :-1]), np.asarray(maps["maps"], np.float32), "attention")
