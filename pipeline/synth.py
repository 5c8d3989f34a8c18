"""A synthetic content platform on which the NoteLLM-2 question can be asked.

Every note has a *text topic* (words in its title, content and `#tags#`) and a *visual
motif* (shape, colour and texture drawn into its image) that its text never mentions.
Users browse in sessions over days; a session follows one of the user's preferred
topics, one of their preferred motifs, or both, with some noise. So co-viewed ("related")
notes are explainable by text only, by the image only, or by both, and a share of notes
have near-empty text, whose relations only the image can recover.

Note popularity (Zipf) and user activity (log-normal) are heavy-tailed. Everything is
deterministic given the seed and vectorised over events, so millions of events take
seconds. Ground truth (`truth.parquet`) lets evaluations slice pairs with `pair_relation`.

Layout written under OUT (atomically: a crash leaves a previous OUT intact):

    notes.parquet      note_id, title, content, tags, image (relative to OUT)
    images/<id>.png    RGB, image_size px
    logs/part-NNN.parquet   user_id, note_id, ts (timestamp[us]), event; one file per day
    truth.parquet      note_id, topic, motif, shape, color, texture, text_length, popularity
    users.parquet      user_id, events, topics, motifs (each user's preferences)
    synth.json         the parameters and counts (what `generate_platform` returns)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.errors import UserError
from core.outputs import check_output_dir, output_dir
from pipeline import motifs as mt
from pipeline.vocab import EMPTY_TITLES, FILLER, topic_words

# Share of notes per text length: near-empty notes carry no topic words at all.
TEXT_LENGTH_SHARES = {"empty": 0.15, "short": 0.40, "long": 0.45}
# Which factor drives a browsing session.
SESSION_KINDS = ("topic", "motif", "both", "random")
SESSION_SHARES = (0.34, 0.34, 0.22, 0.10)
# A user's persona: the session kind they mostly browse (topic, motif or both).
PERSONAS = {"topic": 0.4, "motif": 0.4, "both": 0.2}
PERSONA_LOYALTY = 0.8
MEAN_SESSION_LENGTH = 6.0
ON_TOPIC = 0.88  # chance that a view in a session follows its driver (else: popular noise)
PREFERENCE_LOYALTY = 0.85  # chance a session's driver is one of the user's preferences
EVENT_SHARES = {"view": 0.85, "click": 0.11, "like": 0.04}
START = np.datetime64("2024-03-04T00:00:00", "s")


def default_factors(notes: int) -> tuple[int, int]:
    """Topics and motifs for a platform of `notes` notes (about 30 notes per factor)."""
    n = int(np.clip(notes // 30, 4, 64))
    return n, n


SYNTH_OUTPUTS = (
    "notes.parquet",
    "truth.parquet",
    "users.parquet",
    "synth.json",
    "images/*.png",
    "logs/part-*.parquet",
)


def generate_platform(
    out: str | Path,
    *,
    notes: int = 500,
    users: int = 200,
    days: int = 14,
    events: int = 20_000,
    image_size: int = 64,
    seed: int = 0,
    topics: int | None = None,
    n_motifs: int | None = None,
    images: bool = True,
    workers: int = 1,
    force: bool = False,
) -> dict[str, Any]:
    """Write a synthetic platform to `out` and return its summary (also in `synth.json`).

    Only the platform's own files are replaced in `out` (each atomically, synth.json
    last); a directory holding other files is refused unless `force` (`core.outputs`).

    `topics` / `n_motifs` default to about one per 30 notes; `images=False` skips the PNGs
    (benchmarks need only logs); `workers` > 1 draws images in parallel processes.
    """
    _check_sizes(notes=notes, users=users, days=days, events=events, image_size=image_size)
    check_output_dir(out, SYNTH_OUTPUTS, label="synth", force=force, option="OUT")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    d_topics, d_motifs = default_factors(notes)
    n_topics = topics or d_topics
    n_mot = n_motifs or d_motifs
    if not 1 <= n_mot <= len(mt.SHAPES) * len(mt.COLORS) * len(mt.TEXTURES):
        raise UserError(f"--motifs {n_mot} is out of range; expected 1..256")

    truth = _note_factors(notes, n_topics, n_mot, rng)
    notes_df = _note_texts(truth, n_topics, rng)
    prefs, logs = _browse(truth, users=users, days=days, events=events, n_topics=n_topics, rng=rng)
    image_seeds = rng.integers(0, 2**63 - 1, notes)

    out = Path(out)
    staged = output_dir(out, SYNTH_OUTPUTS, label="synth", force=force, option="OUT", last=("synth.json",))
    with staged as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "logs").mkdir()
        notes_df.write_parquet(tmp / "notes.parquet")
        truth.write_parquet(tmp / "truth.parquet")
        prefs.write_parquet(tmp / "users.parquet")
        n_parts = write_daily_logs(logs, tmp / "logs")
        if images:
            motif_triples = list(zip(truth["shape_id"], truth["color_id"], truth["texture_id"], strict=True))
            _write_all_images(
                [tmp / p for p in notes_df["image"]], motif_triples, image_size, image_seeds, workers
            )
        summary = {
            "out": str(out),
            "seed": seed,
            "notes": notes,
            "users": users,
            "active_users": int(logs["user_id"].n_unique()),
            "days": days,
            "events": logs.height,
            "event_counts": dict(logs.group_by("event").len().sort("event").iter_rows()),
            "topics": n_topics,
            "motifs": n_mot,
            "image_size": image_size,
            "images": images,
            "log_files": n_parts,
            "text_length_counts": dict(truth.group_by("text_length").len().sort("text_length").iter_rows()),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def pair_relation(truth: pl.DataFrame, query_ids: Sequence[str], target_ids: Sequence[str]) -> list[str]:
    """Why two notes are related, by ground truth: "both", "text", "image" or "none".

    "text" = same topic only, "image" = same motif only. An id missing from `truth`
    gives "none".
    """
    pairs = pl.DataFrame(
        {"query_id": list(query_ids), "target_id": list(target_ids)},
        schema={"query_id": pl.Utf8, "target_id": pl.Utf8},
    ).with_row_index("_i")
    facts = truth.select(pl.col("note_id").cast(pl.Utf8), "topic", "motif")
    joined = (
        pairs.join(facts, left_on="query_id", right_on="note_id", how="left")
        .join(facts, left_on="target_id", right_on="note_id", how="left", suffix="_t")
        .sort("_i")
    )
    same_topic = (pl.col("topic") == pl.col("topic_t")).fill_null(False)
    same_motif = (pl.col("motif") == pl.col("motif_t")).fill_null(False)
    rel = (
        pl.when(same_topic & same_motif)
        .then(pl.lit("both"))
        .when(same_topic)
        .then(pl.lit("text"))
        .when(same_motif)
        .then(pl.lit("image"))
        .otherwise(pl.lit("none"))
    )
    return joined.select(rel.alias("r"))["r"].to_list()


# --- notes ---------------------------------------------------------------------------


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        low = 8 if name == "image_size" else 1
        if value < low:
            raise UserError(f"--{name.replace('_', '-')} {value} is too small; expected an integer >= {low}")


def sequential_ids(prefix: str, n: int) -> list[str]:
    """`prefix` + zero-padded 0..n-1 (at least 6 digits), so ids sort in number order."""
    width = max(6, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _note_factors(notes: int, n_topics: int, n_motifs: int, rng: np.random.Generator) -> pl.DataFrame:
    """Topic, motif, text length and popularity per note; topic and motif independent."""
    # Unequal factor sizes (like real categories), but every factor has notes.
    topic = _balanced_draw(notes, rng.dirichlet(np.full(n_topics, 4.0)), rng)
    motif = _balanced_draw(notes, rng.dirichlet(np.full(n_motifs, 4.0)), rng)
    triples = mt.choose_motifs(n_motifs, rng)
    shape_id = np.array([triples[m][0] for m in motif])
    color_id = np.array([triples[m][1] for m in motif])
    texture_id = np.array([triples[m][2] for m in motif])
    kinds = list(TEXT_LENGTH_SHARES)
    text_length = rng.choice(len(kinds), size=notes, p=list(TEXT_LENGTH_SHARES.values()))
    # Zipf-like popularity over a random order of notes.
    popularity = 1.0 / (1.0 + rng.permutation(notes)) ** 0.8
    return pl.DataFrame(
        {
            "note_id": sequential_ids("n", notes),
            "topic": topic.astype(np.int32),
            "motif": motif.astype(np.int32),
            "shape": [mt.SHAPES[s] for s in shape_id],
            "color": [list(mt.COLORS)[c] for c in color_id],
            "texture": [mt.TEXTURES[t] for t in texture_id],
            "text_length": [kinds[k] for k in text_length],
            "popularity": popularity / popularity.sum(),
            "shape_id": shape_id.astype(np.int32),
            "color_id": color_id.astype(np.int32),
            "texture_id": texture_id.astype(np.int32),
        }
    )


def _balanced_draw(n: int, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n labels with shares p, each label present at least once when n >= len(p)."""
    labels = rng.choice(len(p), size=n, p=p)
    k = min(n, len(p))
    labels[rng.choice(n, size=k, replace=False)] = np.arange(k)
    return labels


def _note_texts(truth: pl.DataFrame, n_topics: int, rng: np.random.Generator) -> pl.DataFrame:
    """Title, content (with `#tag#` hashtags) and tags; words depend on the topic only."""
    vocab = topic_words(n_topics)
    titles: list[str] = []
    contents: list[str] = []
    tags: list[list[str]] = []
    for topic, length in zip(truth["topic"], truth["text_length"], strict=True):
        words = vocab[topic]

        def pick(k: int, on_topic: float, words: list[str] = words) -> list[str]:
            out = []
            for _ in range(k):
                u = rng.random()
                if u < on_topic:
                    out.append(words[int(rng.integers(len(words)))])
                elif u < on_topic + 0.06:  # a stray word of another topic
                    other = vocab[int(rng.integers(n_topics))]
                    out.append(other[int(rng.integers(len(other)))])
                else:
                    out.append(FILLER[int(rng.integers(len(FILLER)))])
            return out

        if length == "empty":
            titles.append(EMPTY_TITLES[int(rng.integers(len(EMPTY_TITLES)))])
            contents.append("")
            tags.append([])
        elif length == "short":
            titles.append(" ".join(pick(int(rng.integers(1, 4)), 0.6)).capitalize())
            body = pick(int(rng.integers(0, 6)), 0.3)
            note_tags = pick(int(rng.integers(0, 2)), 0.9)
            contents.append(" ".join([*body, *(f"#{t}#" for t in note_tags)]))
            tags.append(list(dict.fromkeys(note_tags)))
        else:
            titles.append(" ".join(pick(int(rng.integers(3, 7)), 0.55)).capitalize())
            sentences = []
            for _ in range(int(rng.integers(3, 7))):
                sentences.append(" ".join(pick(int(rng.integers(6, 13)), 0.4)).capitalize() + ".")
            note_tags = pick(int(rng.integers(2, 5)), 0.9)
            contents.append(" ".join([*sentences, *(f"#{t}#" for t in note_tags)]))
            tags.append(list(dict.fromkeys(note_tags)))
    ids = truth["note_id"]
    return pl.DataFrame(
        {
            "note_id": ids,
            "title": titles,
            "content": contents,
            "tags": pl.Series(tags, dtype=pl.List(pl.Utf8)),
            "image": [f"images/{i}.png" for i in ids],
        }
    )


# --- browsing ------------------------------------------------------------------------


class NotePools:
    """Popularity-weighted sampling of notes within groups (a topic, a motif, a cell).

    Notes are sorted by group; one global cumulative popularity array lets a whole
    vector of (group, uniform) draws be answered by one `searchsorted`.
    """

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(group, kind="stable")
        cum = np.cumsum(weight[self.order])
        counts = np.bincount(group, minlength=n_groups)
        ends = np.cumsum(counts)
        starts = ends - counts
        self.counts = counts
        self.starts = starts
        self.base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
        self.total = np.where(counts > 0, cum[np.maximum(ends - 1, 0)] - self.base, 0.0)
        self.cum = cum

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        target = self.base[groups] + rng.random(len(groups)) * self.total[groups]
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.clip(pos, self.starts[groups], self.starts[groups] + self.counts[groups] - 1)
        return self.order[pos]


def _browse(
    truth: pl.DataFrame, *, users: int, days: int, events: int, n_topics: int, rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """User preferences and an event log of exactly `events` rows, all vectorised."""
    n_notes = truth.height
    topic = truth["topic"].to_numpy()
    motif = truth["motif"].to_numpy()
    n_mot = int(motif.max()) + 1
    pop = truth["popularity"].to_numpy()

    # Heavy-tailed user activity; each user prefers two topics and two motifs.
    activity = rng.lognormal(0.0, 1.1, users)
    per_user = rng.multinomial(events, activity / activity.sum())
    pref_topic = rng.integers(0, n_topics, (users, 2))
    pref_motif = rng.integers(0, n_mot, (users, 2))

    user, session, new_session = split_sessions(per_user, rng)
    s_user = user[new_session]
    n_sessions = len(s_user)

    # What drives each session: mostly the user's persona (a reader of topics, a
    # browser of looks, or both), keyed by one of their preferences (the first favoured).
    persona = rng.choice(len(PERSONAS), size=users, p=list(PERSONAS.values()))
    kind = np.where(
        rng.random(n_sessions) < PERSONA_LOYALTY,
        persona[s_user],
        rng.choice(len(SESSION_KINDS), size=n_sessions, p=SESSION_SHARES),
    )
    which = (rng.random((n_sessions, 2)) < 0.3).astype(np.int64)  # 70% first preference
    loyal = rng.random((n_sessions, 2)) < PREFERENCE_LOYALTY
    s_topic = np.where(loyal[:, 0], pref_topic[s_user, which[:, 0]], rng.integers(0, n_topics, n_sessions))
    s_motif = np.where(loyal[:, 1], pref_motif[s_user, which[:, 1]], rng.integers(0, n_mot, n_sessions))

    # Pick each event's note from the session's pool, or popular noise.
    by_topic = NotePools(topic, pop, n_topics)
    by_motif = NotePools(motif, pop, n_mot)
    by_cell = NotePools(topic * n_mot + motif, pop, n_topics * n_mot)
    everyone = NotePools(np.zeros(n_notes, np.int64), pop, 1)
    e_kind = kind[session]
    note = everyone.sample(np.zeros(events, np.int64), rng)
    on = rng.random(events) < ON_TOPIC
    for k, pools, key in (
        (0, by_topic, s_topic[session]),
        (1, by_motif, s_motif[session]),
        (2, by_cell, s_topic[session] * n_mot + s_motif[session]),
    ):
        sel = on & (e_kind == k)
        if k == 2:  # an empty (topic, motif) cell falls back to the topic
            empty = by_cell.counts[key] == 0
            sel_cell, sel_topic = sel & ~empty, sel & empty
            note[sel_topic] = by_topic.sample(s_topic[session][sel_topic], rng)
            sel = sel_cell
        note[sel] = pools.sample(key[sel], rng)

    user_ids = pl.Series("user_id", sequential_ids("u", users), dtype=pl.Utf8)
    logs = session_log(
        note, user, session, new_session, days=days, rng=rng, note_ids=truth["note_id"], user_ids=user_ids
    )
    prefs = pl.DataFrame(
        {
            "user_id": user_ids,
            "events": per_user.astype(np.int64),
            "topics": pref_topic.astype(np.int32).tolist(),
            "motifs": pref_motif.astype(np.int32).tolist(),
            "persona": [list(PERSONAS)[k] for k in persona],
        }
    )
    return prefs, logs


def split_sessions(
    per_user: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay out `per_user[u]` events per user in sessions of ~`MEAN_SESSION_LENGTH` events.

    Returns per event: its user, its session number (0, 1, ... in event order) and
    whether it opens a session (a user's first event always does).
    """
    user = np.repeat(np.arange(len(per_user)), per_user)
    events = len(user)
    first = np.r_[True, user[1:] != user[:-1]] if events else np.zeros(0, bool)
    new_session = first | (rng.random(events) < 1.0 / MEAN_SESSION_LENGTH)
    session = np.cumsum(new_session) - 1
    return user, session, new_session


def session_log(
    note: np.ndarray,
    user: np.ndarray,
    session: np.ndarray,
    new_session: np.ndarray,
    *,
    days: int,
    rng: np.random.Generator,
    note_ids: pl.Series,
    user_ids: pl.Series,
) -> pl.DataFrame:
    """Events (one per row of `note`/`user`, grouped in sessions) -> a timed event log.

    A session starts at a random moment within `days`; its views follow ~45 s apart.
    Clicks and likes repeat the note just viewed a few seconds later (the first event of a
    session is a view). `note` and `user` index `note_ids` and `user_ids`; `session` is
    each event's session number and `new_session` marks the first event of each.
    Returns `user_id, note_id, ts, event` sorted by (ts, user_id).
    """
    events = len(note)
    n_sessions = int(new_session.sum())
    note = note.copy()
    s_start = rng.integers(0, days * 86_400 - 3_600, n_sessions)
    gap = rng.exponential(45.0, events).astype(np.int64) + 1
    gap[new_session] = 0
    cum = np.cumsum(gap)
    ts = s_start[session] + cum - cum[new_session][session]

    labels = list(EVENT_SHARES)
    event = rng.choice(len(labels), size=events, p=list(EVENT_SHARES.values()))
    event[new_session] = 0
    last_view = np.maximum.accumulate(np.where(event == 0, np.arange(events), 0))
    repeat = event != 0
    note[repeat] = note[last_view[repeat]]
    ts[repeat] = ts[last_view[repeat]] + rng.integers(1, 20, int(repeat.sum()))
    np.minimum(ts, days * 86_400 - 1, out=ts)  # the rare marathon session stays in the last day

    # Gather strings from small Series (no Python objects per event).
    return pl.DataFrame(
        {
            "user_id": user_ids.gather(user),
            "note_id": note_ids.gather(note),
            "ts": (START + ts.astype("timedelta64[s]")).astype("datetime64[us]"),
            "event": pl.Series(labels, dtype=pl.Utf8).gather(event),
        }
    ).sort("ts", "user_id", maintain_order=True)


def write_daily_logs(logs: pl.DataFrame, folder: Path) -> int:
    """One Parquet file per day, like a daily-partitioned event table."""
    day = ((pl.col("ts") - pl.lit(START.astype("datetime64[us]").item())).dt.total_days()).alias("_day")
    parts = logs.with_columns(day).partition_by("_day", as_dict=True, maintain_order=True)
    for (d,), part in sorted(parts.items()):
        part.drop("_day").write_parquet(folder / f"part-{int(d):03d}.parquet")
    return len(parts)


def _write_all_images(
    paths: list[Path], triples: list[tuple[int, int, int]], size: int, seeds: np.ndarray, workers: int
) -> None:
    if workers <= 1 or len(paths) < 2000:
        mt.write_images(paths, triples, size, seeds)
        return
    chunks = np.array_split(np.arange(len(paths)), workers * 4)
    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(mt.write_images, [paths[i] for i in c], [triples[i] for i in c], size, seeds[c])
            for c in chunks
        ]
        for f in futures:
            f.result()
