"""Most specific rate wins: exact > longer literal prefix > more literal characters > fewer wildcards."""

import pytest

from keyledger.core.errors import Invalid
from keyledger.pricing.model import Pattern, most_specific


@pytest.mark.parametrize(
    ("patterns", "line_item", "winner"),
    [
        (["streaming::nova-3", "streaming::*", "*"], "streaming::nova-3", "streaming::nova-3"),  # exact
        (["streaming::*", "*"], "streaming::nova-3", "streaming::*"),  # longer literal prefix
        (["*", "streaming::nova-*"], "streaming::nova-2", "streaming::nova-*"),
        (["stream*", "streaming::*"], "streaming::nova-3", "streaming::*"),
        (["s*::nova-3", "streaming::*-3"], "streaming::nova-3", "streaming::*-3"),  # prefix first
        (["*::nova-*", "*::*"], "sync::nova-3", "*::nova-*"),  # same prefix (none): more literals...
        (["*::*-3", "*::nova-*"], "sync::nova-3", "*::nova-*"),
        (["*::*", "*"], "sync::nova-3", "*::*"),  # a subset beats its superset
        (["s*n*-3", "s*nova-3"], "sync::nova-3", "s*nova-3"),
        (["sync::*v*a-3", "sync::*va-3"], "sync::nova-3", "sync::*va-3"),  # ...then fewer wildcards
        (["sync::*"], "async::nova-3", None),  # patterns match the whole name
        (["*sync::*"], "async::nova-3", "*sync::*"),
        (["sync::nova-3"], "sync::nova-3x", None),
        (["sync::nova-3*"], "sync::nova-3", "sync::nova-3*"),  # * matches nothing too
        (["a.b"], "aXb", None),  # only * is special
        (["a?b"], "aXb", None),
        (["a[x]b"], "a[x]b", "a[x]b"),
    ],
)
def test_most_specific_wins(patterns, line_item, winner):
    found = most_specific([Pattern(p) for p in patterns], line_item, "rates")
    assert (found.text if found else None) == winner


def test_equally_specific_matches_are_an_error_not_a_guess():
    with pytest.raises(Invalid, match=r"'sync::nova-3' matches rates '.*' and '.*' equally"):
        most_specific([Pattern("sync::*a-*"), Pattern("sync::*v*3")], "sync::nova-3", "rates")
