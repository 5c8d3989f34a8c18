"""Words for the synthetic platform's note texts.

Each topic owns a small vocabulary; notes of a topic draw most of their words from it,
so text alone can tell topics apart. No word names a colour or a shape: the visual motif
drawn into a note's image must not be recoverable from its text.
"""

from __future__ import annotations

import numpy as np

# Hand-written topics first (readable demos); more topics get generated pseudo-words.
NAMED_TOPICS: list[list[str]] = [
    ["recipe", "noodles", "garlic", "simmer", "broth", "dumpling", "spicy", "wok", "sesame", "ginger"],
    ["hiking", "trail", "summit", "backpack", "campfire", "tent", "canyon", "boots", "ridge", "lantern"],
    ["workout", "squat", "cardio", "protein", "gym", "stretch", "sprint", "plank", "dumbbell", "reps"],
    ["skincare", "serum", "lotion", "sunscreen", "toner", "cleanser", "retinol", "pores", "mask", "glow"],
    ["budget", "savings", "invest", "dividend", "rent", "salary", "stocks", "frugal", "pension", "loan"],
    ["puppy", "kitten", "leash", "grooming", "vet", "treats", "litter", "paws", "fetch", "collar"],
    ["guitar", "chords", "melody", "drummer", "vinyl", "concert", "playlist", "lyrics", "tempo", "album"],
    ["coding", "python", "compiler", "debugging", "keyboard", "server", "refactor", "git", "terminal", "api"],
    ["garden", "seedlings", "compost", "tomatoes", "soil", "pruning", "basil", "watering", "shed", "mulch"],
    ["wedding", "bride", "bouquet", "vows", "venue", "veil", "toast", "groom", "rings", "reception"],
    ["skateboard", "ollie", "ramp", "kickflip", "grind", "deck", "wheels", "halfpipe", "bearings", "trucks"],
    ["novel", "chapter", "author", "shelf", "library", "paperback", "plot", "poetry", "fiction", "memoir"],
    ["coffee", "espresso", "latte", "barista", "beans", "roast", "grinder", "crema", "pourover", "mug"],
    ["baby", "diaper", "stroller", "nursery", "toddler", "lullaby", "crib", "formula", "teething", "bottle"],
    ["camera", "lens", "aperture", "tripod", "shutter", "portrait", "exposure", "zoom", "editing", "film"],
    ["sneakers", "hoodie", "denim", "outfit", "thrift", "jacket", "streetwear", "tote", "styling", "closet"],
]

# Words any note may use; they carry no topic signal.
FILLER = [
    "today",
    "my",
    "this",
    "is",
    "so",
    "the",
    "a",
    "and",
    "with",
    "for",
    "really",
    "love",
    "just",
    "new",
    "best",
    "tried",
    "finally",
    "week",
    "share",
    "some",
    "little",
    "tips",
    "how",
    "what",
    "again",
    "honestly",
    "favorite",
    "day",
    "weekend",
    "quick",
    "easy",
    "notes",
    "guide",
    "vlog",
    "update",
    "thoughts",
    "check",
    "out",
    "first",
    "time",
    "must",
    "have",
    "try",
    "worth",
    "it",
]

# Titles of near-empty notes: nothing about the topic.
EMPTY_TITLES = ["", "", "today", "look", "hmm", "wow", "mood", "vibes", "this", "ok"]

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ru",
    "te",
    "va",
    "zo",
    "ne",
    "pi",
    "sha",
    "dor",
    "lin",
    "mek",
    "tor",
    "vel",
    "qua",
    "bri",
    "sto",
    "fen",
    "gal",
]


def topic_words(n_topics: int) -> list[list[str]]:
    """Vocabularies for `n_topics` topics (10 words each), identical for every seed."""
    words = [list(w) for w in NAMED_TOPICS[:n_topics]]
    rng = np.random.default_rng(12345)  # fixed: a topic's words never depend on the seed
    seen = {w for topic in NAMED_TOPICS for w in topic} | set(FILLER)
    while len(words) < n_topics:
        topic: list[str] = []
        while len(topic) < 10:
            word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            if word not in seen:
                seen.add(word)
                topic.append(word)
        words.append(topic)
    return words
