"""ImageNet classes -> the words a caption uses for them, from WordNet (``python -m training wordmap``).

Each of the 1,000 ImageNet-1k classes is a WordNet 3.0 noun synset (its id ``n01440764`` is the synset's
offset in ``data.noun``). For each class this walks its hypernym path upwards, nearest synsets first
(macaw -> parrot -> bird -> vertebrate -> ... ), and writes every synset's one-word lemmas on the way, so a
captioner can pick, for its own vocabulary, the most specific word it knows (``caption_core.guidance``).
It also writes each class's group (animal, vehicle, food, plant, or none: the classes guidance may use and
the words a confident tagger may veto come from the same group) and the irregular plurals of WordNet's
``noun.exc``. For the Flickr8k vocabulary of the default bundle it records the word chosen per class and the
classes that map to nothing.

Sources (read, never shipped whole): WordNet 3.0 from Debian's ``wordnet-base`` (``/usr/share/wordnet``;
the WordNet 3.0 licence, Princeton University), and the ImageNet-1k synset ids in class-index order from the
PyPI package ``timm`` (``timm/data/_info/imagenet_synsets.txt``, Apache-2.0; its code is never imported:
``pip install --no-deps timm`` or pass the wheel or the text file).
"""

from __future__ import annotations

import collections
import datetime
import importlib.util
import os
import zipfile

from caption_core.files import write_json_atomic

WORDNET_DIR = "/usr/share/wordnet"
SYNSETS_IN_TIMM = "timm/data/_info/imagenet_synsets.txt"
# The groups, in order of precedence: a class belongs to the first group with a root on its hypernym path
# (offsets in WordNet 3.0; a group may have several roots; a car is a wheeled vehicle, which WordNet also files
# under container, so vehicles come first and containers last). Guidance requires words of some groups and
# vetoes within them.
GROUPS = {
    "animal": ("00015388",),  # animal, animate being, beast, brute, creature, fauna
    "vehicle": ("03100490",),  # conveyance, transport (cars, trucks, boats, planes, bicycles)
    "food": ("00021265",),  # food, nutrient
    "plant": ("00017222",),  # plant, flora, plant life
    "furniture": ("03405725",),  # furniture (tables, beds, desks, couches, seats)
    "device": ("03278248", "03699975"),  # electronic equipment (televisions, phones, monitors), machine (computers)
    "appliance": ("02729837",),  # appliance (microwaves, stoves, refrigerators, washers)
    "sports": ("04285146",),  # sports equipment (balls, skis, rackets, sleds)
    "instrument": ("03800933",),  # musical instrument (guitars, drums, violins)
    "clothing": ("03051540",),  # clothing (shirts, hats, jackets, shoes)
    "building": ("02913152",),  # building, edifice (churches, houses, towers, shops)
    "container": ("03094503",),  # container (bottles, bags, basins, cups, boxes)
}
# Words too general to name a thing in a caption, whatever the path (an umbrella is not "a covering").
TOO_GENERAL = frozenset(
    "entity thing object whole unit artifact artefact instrumentality device structure construction container "
    "covering commodity matter substance material organism being creature beast brute fauna flora organism "
    "vertebrate craniate chordate invertebrate placental eutherian mammal mammalian metazoan "
    "equipment implement instrument system article consumer goods merchandise ware product "
    "food nutrient solid fluid liquid content cognition abstraction attribute part portion piece "
    "causal agent agent physical living life form vascular herb herbaceous woody conveyance transport vehicle craft "
    "game course arm arms weapon weaponry instrumentation nutriment nourishment nutrition sustenance aliment "
    "victuals litter young offspring domestic good goods durables durable receptacle vessel machine".split())


class WordNet:
    """Noun synsets of a WordNet 3.0 database folder: lemmas and hypernyms by offset."""

    def __init__(self, folder: str = WORDNET_DIR):
        path = os.path.join(folder, "data.noun")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no WordNet 3.0 database at {folder} (data.noun missing): install Debian's "
                                    "wordnet-base (apt-get install wordnet-base) or pass --wordnet FOLDER")
        self.lemmas: dict[str, list[str]] = {}
        self.hypernyms: dict[str, list[str]] = {}
        self.hyponyms: dict[str, list[str]] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                head = line.split(" | ", 1)[0].split()
                offset, n_words = head[0], int(head[3], 16)
                words = [head[4 + 2 * i].lower() for i in range(n_words)]
                at = 4 + 2 * n_words
                n_ptrs = int(head[at])
                ptrs = [head[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(n_ptrs)]
                self.lemmas[offset] = words
                self.hypernyms[offset] = [p[1] for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"]
                self.hyponyms[offset] = [p[1] for p in ptrs if p[0] in ("~", "~i") and p[2] == "n"]
        self.first_sense: dict[str, str] = {}  # lemma -> its most frequent noun synset (index.noun's order)
        index = os.path.join(folder, "index.noun")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                for line in f:
                    if not line.startswith(" "):
                        parts = line.split()
                        self.first_sense[parts[0]] = parts[-int(parts[2])]
        self.irregular_plurals: dict[str, list[str]] = collections.defaultdict(list)
        exc = os.path.join(folder, "noun.exc")
        if os.path.isfile(exc):
            with open(exc, encoding="utf-8") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2 and "_" not in parts[0]:
                        for base in parts[1:]:
                            self.irregular_plurals[base].append(parts[0])

    def path(self, offset: str) -> list[str]:
        """The synset and all its hypernyms, nearest first (breadth first over multiple parents)."""
        seen, order, queue = {offset}, [], collections.deque([offset])
        while queue:
            s = queue.popleft()
            order.append(s)
            for h in self.hypernyms.get(s, []):
                if h not in seen:
                    seen.add(h)
                    queue.append(h)
        return order


def one_words(lemmas: list[str]) -> list[str]:
    """The lemmas a caption can use as one word (no 'golden_retriever', 'x-ray'), too general ones left out."""
    return [w for w in lemmas if "_" not in w and "-" not in w and w.isalpha() and w not in TOO_GENERAL]


def imagenet_synsets(source: str | None = None) -> list[str]:
    """The 1,000 ImageNet-1k synset ids in class-index order: from a text file, a timm wheel, or the
    installed timm package (its data file only)."""
    if source is None:
        spec = importlib.util.find_spec("timm")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("no ImageNet synset list: pip install --no-deps timm==1.0.31 (its "
                                    "data/_info/imagenet_synsets.txt is read, its code never imported), or pass "
                                    "--synsets FILE (.txt or a timm wheel)")
        source = os.path.join(list(spec.submodule_search_locations)[0], "data", "_info", "imagenet_synsets.txt")
    if source.endswith(".whl"):
        with zipfile.ZipFile(source) as z:
            text = z.read(SYNSETS_IN_TIMM).decode("utf-8")
    else:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(ids) != 1000 or not all(i.startswith("n") and len(i) == 9 for i in ids):
        raise ValueError(f"{source}: expected 1000 synset ids like n01440764, found {len(ids)}")
    return ids


def build_word_map(wordnet: WordNet, synsets: list[str], class_names: list[str], vocab_words: list[str] | None,
                   made: dict) -> dict:
    """The JSON document: per class its id, name, group and candidate words (nearest synsets first)."""
    group_of = {offset: name for name, offsets in GROUPS.items() for offset in offsets}
    class_synsets = {wnid[1:] for wnid in synsets}
    # a kind is named by its synset's first lemma, one word, whose most frequent sense it is ("kid" is a child
    # before a young goat), and which names nothing on any class's path ("bus", an old name for a car, is a
    # class's own word)
    path_words = {w for wnid in synsets for s in wordnet.path(wnid[1:]) for w in wordnet.lemmas[s]}
    one_word_heads = {lemmas[0] for lemmas in wordnet.lemmas.values() if one_words(lemmas[:1])}
    classes, unmapped = [], []
    for index, (wnid, name) in enumerate(zip(synsets, class_names)):
        offset = wnid[1:]
        if offset not in wordnet.lemmas:
            raise ValueError(f"ImageNet class {index} ({wnid}) is not a WordNet 3.0 noun synset")
        path = wordnet.path(offset)
        on_path = set(path)
        root = next((r for offs in GROUPS.values() for r in offs if r in on_path), None)
        group = group_of[root] if root else None
        above = set(wordnet.path(root)) if root else set()  # the group's root and its ancestors
        candidates = []
        for s in path:
            words = one_words(wordnet.lemmas[s])
            if words:  # general: the group's root synset or above it ("animal"), a last resort
                # kinds: the one-word lemmas of its direct hyponyms that are no ImageNet class of their own
                # (dog: puppy, pooch, mutt), which count as the word (and are vetoed with it)
                kinds = [] if s in above else sorted({wordnet.lemmas[h][0] for h in wordnet.hyponyms.get(s, [])
                                                      if h not in class_synsets and
                                                      wordnet.first_sense.get(wordnet.lemmas[h][0]) == h}
                                                     & one_word_heads - path_words)
                candidates.append({"words": words, "general": s in above, **({"kinds": kinds} if kinds else {})})
        row = {"index": index, "wnid": wnid, "name": name, "group": group, "candidates": candidates}
        if vocab_words is not None:
            row["word"] = chosen_word(candidates, vocab_words)
            if row["word"] is None:
                unmapped.append(index)
        classes.append(row)
    plurals = {w: sorted(set(p)) for w, p in wordnet.irregular_plurals.items()
               if any(w in lvl["words"] for c in classes for lvl in c["candidates"])}
    doc = {"format": "caption_core.imagenet_words/1", "made": made,
           "groups": {name: [wordnet.lemmas[off][0] for off in offs] for name, offs in GROUPS.items()},
           "too_general": sorted(TOO_GENERAL), "irregular_plurals": plurals, "classes": classes}
    if vocab_words is not None:
        doc["unmapped"] = {"vocabulary": made.get("vocabulary"), "count": len(unmapped),
                           "classes": [f"{i} {class_names[i]}" for i in unmapped]}
    return doc


def chosen_word(candidates: list[dict], vocab_words: list[str]) -> str | None:
    """The word ``caption_core.guidance.WordMap`` picks for a class (recorded in the JSON for one vocabulary)."""
    from caption_core.guidance import choose_word

    chosen = choose_word(candidates, {w: i for i, w in enumerate(vocab_words)})
    return None if chosen is None else chosen[1]


def write_word_map(out: str, wordnet_dir: str = WORDNET_DIR, synsets: str | None = None,
                   vocabulary: str | None = None, command: str = "") -> dict:
    from caption_core.encoders.base import imagenet_class_names
    from caption_core.text import Vocabulary

    vocab_words = None
    if vocabulary:
        vocab_words = Vocabulary.load(vocabulary).id_to_word  # in order of frequency
    made = {"command": command, "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wordnet": "WordNet 3.0 (Debian wordnet-base), WordNet 3.0 licence, Princeton University",
            "synsets": "ImageNet-1k synset ids in class order, timm data/_info/imagenet_synsets.txt (Apache-2.0)",
            "class_names": "caption_core/data/imagenet_labels.json (imagenet-simple-labels, MIT)",
            "vocabulary": os.path.relpath(vocabulary) if vocabulary else None}
    doc = build_word_map(WordNet(wordnet_dir), imagenet_synsets(synsets), list(imagenet_class_names()), vocab_words,
                         made)
    write_json_atomic(out, doc)
    return doc
