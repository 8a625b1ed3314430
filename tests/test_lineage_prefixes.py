"""`cosmos lineage` takes what it prints: a unique prefix of a content hash, clip id, checkpoint key or sample id;
an ambiguous prefix is named with some of its matches, and an unknown one says so."""

import hashlib
import json
import os
import subprocess
import uuid

import polars as pl
import pytest

from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.training.lineage import AmbiguousIdentifier, LineageNotFound, lineage, resolve_identifier
from test_cosmos_run import COSMOS


def content_hash(seed: str, prefix: str = "") -> str:
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[len(prefix):]


# Two videos whose content hashes share their first six characters (one in 16 million by chance; made here).
TWIN_A, TWIN_B = content_hash("a", "abcdef1"), content_hash("b", "abcdef2")
LONE = content_hash("lone")
CLIP = str(uuid.uuid5(uuid.NAMESPACE_URL, LONE))


@pytest.fixture
def store(cosmos_env) -> LocalStore:
    """The tables `raw_videos` and `video_clips` write, for three curated videos and one clip."""
    raw = cosmos_env.tables / "raw_videos"
    raw.mkdir(parents=True)
    pl.DataFrame({"content_hash": [TWIN_A, TWIN_B, LONE], "status": ["ok"] * 3,
                  "landing_name": ["a.mp4", "b.mp4", "lone.mp4"], "batch": ["batch-000001-x"] * 3}
                 ).write_parquet(raw / "batch-000001-x.parquet")
    clips = cosmos_env.tables / "video_clips"
    clips.mkdir(parents=True)
    pl.DataFrame({"clip_id": [CLIP], "source_hash": [LONE]}).write_parquet(clips / "batch-000001-x.parquet")
    return LocalStore(cosmos_env.home)


def test_the_16_character_hash_lineage_prints_is_taken_back(store):
    found = lineage(store, LONE[:16])
    assert found["id"] == LONE and found["kind"] == "raw video" and found["clips"] == [CLIP]
    assert lineage(store, CLIP[:8])["id"] == CLIP and lineage(store, CLIP.upper()[:8])["kind"] == "clip"


def test_a_full_identifier_wins_over_prefixes(store):
    assert resolve_identifier(store, TWIN_A) == TWIN_A


def test_an_ambiguous_prefix_lists_its_matches(store):
    with pytest.raises(AmbiguousIdentifier) as error:
        resolve_identifier(store, "abcdef")
    assert "2 identifiers" in str(error.value) and TWIN_A in str(error.value) and TWIN_B in str(error.value)
    assert resolve_identifier(store, "abcdef2") == TWIN_B


def test_a_prefix_of_nothing_or_too_short_says_so(store):
    with pytest.raises(LineageNotFound, match="nor the start of one"):
        resolve_identifier(store, "ffffffffffff")
    with pytest.raises(LineageNotFound, match="at least 4 characters"):
        resolve_identifier(store, LONE[:3])


def test_the_command_names_an_ambiguous_prefix_and_exits_non_zero(store, cosmos_env):
    env = {**os.environ, "COSMOS_HOME": str(cosmos_env.home), "DAGSTER_HOME": str(cosmos_env.dagster_home)}
    ambiguous = subprocess.run([COSMOS, "lineage", "abcdef"], env=env, capture_output=True, text=True, timeout=300)
    assert ambiguous.returncode == 1 and "is a prefix of 2 identifiers" in ambiguous.stderr
    assert "Warning" not in ambiguous.stderr  # no Dagster warnings a user cannot act on
    found = subprocess.run([COSMOS, "lineage", "--json", LONE[:16]], env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout)["id"] == LONE
