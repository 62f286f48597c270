"""Checkpoint fuzzing: whatever bytes or re-signed structure a file holds, the reader raises
nothing but CheckpointError (or ConfigError for its config). A few seconds in the suite with a
fixed seed; longer on demand: CNNKIT_FUZZ_EXAMPLES=5000 pytest tests/test_checkpoint_fuzz.py"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.checkpoint import MAGIC, load_checkpoint, save_checkpoint
from cnnkit.errors import CnnkitError

EXAMPLES = int(os.environ.get("CNNKIT_FUZZ_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def signed(trained_run) -> bytes:
    return (trained_run[1].out_dir / "last.pt").read_bytes()


def _load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pt"
        path.write_bytes(data)
        try:
            load_checkpoint(path, for_resume=True)
        except CnnkitError:
            pass


def _resign(body: bytes) -> bytes:
    return body + MAGIC + hashlib.sha256(body).digest()


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]),
                           st.floats(0, 1), st.binary(min_size=1, max_size=8)),
                 min_size=1, max_size=3)


@SETTINGS
@given(EDITS, st.booleans())
def test_any_bytes_changed_signed_again_or_not(signed, edits, resign):
    """Byte edits anywhere (the zip's headers, the pickle, tensor data), with the digest made
    to match again (as a forger would) or left as it is."""
    body = bytearray(signed[:-len(MAGIC) - 32])
    for kind, where, data in edits:
        at = int(where * (len(body) - 1))
        if kind == "flip":
            body[at] ^= data[0] or 1
        elif kind == "cut":
            del body[at:at + len(data) * 97]
        elif kind == "insert":
            body[at:at] = data
        else:
            body[at:at + len(data) * 13] = bytes(len(body[at:at + len(data) * 13]))
    _load(_resign(bytes(body)) if resign else bytes(body) + signed[-len(MAGIC) - 32:])


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
    | st.builds(torch.zeros, st.integers(0, 3)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def state(trained_run) -> dict:
    return load_checkpoint(trained_run[1].out_dir / "last.pt")


@SETTINGS
@given(st.data())
def test_any_key_replaced_and_signed_again(state, data):
    """A key (or a key inside a key) of a real last.pt replaced by any value, saved by
    save_checkpoint itself: a valid digest over a malformed structure."""
    changed = copy.copy(state)
    key = data.draw(st.sampled_from(sorted(changed)))
    node, value = changed, data.draw(VALUES)
    if isinstance(node[key], dict) and node[key] and data.draw(st.booleans()):
        node[key] = dict(node[key])
        node, key = node[key], data.draw(st.sampled_from(sorted(node[key], key=str)))
    node[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pt"
        save_checkpoint(path, changed)
        _load(path.read_bytes())
