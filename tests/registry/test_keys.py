"""The registry (:mod:`ablate.registry.keys`): short lower_snake_case keys, insertion order, duplicates rejected
naming both origins, unknown keys answered with the valid ones, and the four registries built from the variants'
own tables in the documented order."""

from __future__ import annotations

import pytest

from ablate.errors import UnknownKeyError
from ablate.registry.keys import (ACTIVATION, ATTENTION, NORM, POSITION, REGISTRIES, DuplicateKeyError, Entry,
                                  Registry)


def _table() -> Registry:
    reg = Registry("toy")

    @reg.register("b_key", description="second letter", paper="P", causal=True)
    def b(x):
        return x + 1

    @reg.register("a_key", description="first letter")
    def a(x):
        return x - 1

    return reg


def test_keys_keep_registration_order_and_entries_keep_what_was_said():
    reg = _table()
    assert reg.keys() == ["b_key", "a_key"] and list(reg) == ["b_key", "a_key"] and len(reg) == 2
    e = reg.get("b_key")
    assert isinstance(e, Entry) and e.fn(1) == 2 and reg["a_key"].fn(1) == 0
    assert (e.description, e.paper, e.supports_("causal"), e.supports_("windowed")) == ("second letter", "P", True,
                                                                                         False)
    assert "a_key" in reg and "c_key" not in reg
    assert e.origin  # filled in from the defining module


def test_unknown_key_names_every_valid_key():
    reg = _table()
    with pytest.raises(UnknownKeyError) as ei:
        reg.get("c_key")
    assert str(ei.value) == "unknown toy 'c_key'; valid: b_key, a_key"
    assert ei.value.valid == ["b_key", "a_key"] and isinstance(ei.value, KeyError)


def test_duplicate_key_is_rejected_and_the_first_entry_kept():
    reg = _table()
    with pytest.raises(DuplicateKeyError, match="duplicate toy key 'a_key': registered by .* and again by"):
        reg.register("a_key", description="again")(lambda x: x)
    assert reg.get("a_key").description == "first letter" and len(reg) == 2


@pytest.mark.parametrize("bad", ["", "Rope", "rope-ntk", "rope ntk", "röpe"])
def test_keys_are_short_lower_snake_case(bad):
    with pytest.raises(ValueError, match="lower_snake_case"):
        Registry("toy").register(bad, description="x")


def test_the_four_registries_hold_the_builtin_keys_in_their_modules_order():
    assert list(REGISTRIES) == ["attention", "position", "norm", "activation"]
    assert (REGISTRIES["attention"], REGISTRIES["position"], REGISTRIES["norm"], REGISTRIES["activation"]) == (
        ATTENTION, POSITION, NORM, ACTIVATION)
    pos = POSITION.keys()
    # variants/positions.py registers none, sinusoidal, learned, then imports the RoPE family (variants/rope.py)
    assert pos[:4] == ["none", "sinusoidal", "learned", "rope"], pos
    assert pos.index("rope_yarn_notemp") < pos.index("alibi") < pos.index("t5_bias")
    for reg in REGISTRIES.values():
        assert len(reg) >= 2 and all(e.origin for e in reg.entries()) and all(e.description for e in reg.entries())
    assert {"sdpa", "naive", "linear", "sliding_window"} <= set(ATTENTION.keys())
    assert {"layernorm", "rmsnorm"} <= set(NORM.keys()) and {"gelu", "swiglu"} <= set(ACTIVATION.keys())
