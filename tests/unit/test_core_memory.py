"""``paused_cyclic_gc``: the collector is off inside, back on after (also after an error), and a nested
pause leaves it to the outermost one."""

from __future__ import annotations

import gc

import pytest

from keyledger.core.memory import paused_cyclic_gc


def test_pauses_and_restores() -> None:
    assert gc.isenabled()
    with paused_cyclic_gc():
        assert not gc.isenabled()
        with paused_cyclic_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause found it disabled: it stays so
    assert gc.isenabled()


def test_restores_after_an_error() -> None:
    with pytest.raises(RuntimeError), paused_cyclic_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with paused_cyclic_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cyclic_garbage_made_during_the_pause_is_collected_after() -> None:
    class Node:
        pass

    with paused_cyclic_gc():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = {id(a), id(b)}
        del a, b
    gc.collect()
    assert not alive & {id(o) for o in gc.get_objects() if isinstance(o, Node)}
