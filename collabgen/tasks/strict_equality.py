"""Strict equality for the shipped test wrappers: an `__eq__` that always says yes wins nothing.

Why this exists: under the in-process runner the solution's objects reach the tests, and
``assert candidate(x) == 5`` asks the *result* whether it equals 5 (Python also asks it when
it stands on the right: ``int.__eq__`` declines a foreign type, so the reflected ``__eq__``
decides). A class whose ``__eq__`` always returns True passed every such test. The wrappers
of :mod:`collabgen.tasks.code_formats` rewrite ``assert A == B`` into
``assert _collabgen_equal(A, B)``, built by :func:`_collabgen_equality` below, whose source is
copied verbatim into the generated test file.

What it compares: when either side is an exact built-in value (None, bool, int, float, str,
bytes, list, tuple, dict, set, frozenset; the right side is taken as the expected one when
both are), the other is compared by its *real* value, read with the built-in type's own
methods, never its own: an honest answer passes exactly where ``==`` lets it (True == 1,
5 == 5.0, a Counter or OrderedDict against a dict, a namedtuple against a tuple, a set against
a frozenset, numpy's float64 or an exact-int ``__index__`` against a number), and a lie does
not (an int subclass whose ``__eq__`` says yes is compared as the int it really holds).
Containers compare recursively, dict keys and set items must be built-in values themselves,
and every comparison is the built-in type's own ``__eq__`` called on the expected value.
Anything else (numpy arrays, the tests' own classes, two computed values) falls back to ``==``.

Why it is written so oddly: the solution shares the tests' namespace (and may replace its
``__builtins__``), so the factory takes every type from a literal (``().__class__.__class__``
is ``type``; a folded ``in {0}`` constant is a frozenset), compares types by identity only
(``in`` on a tuple of types would ask a metaclass's ``__eq__``), and the closures reach each
other through cells: once built, nothing it does looks a name up where the solution can
rebind it. The rewritten test functions receive it as a keyword default, bound when they are
defined, so rebinding the global later misses them too.
"""

from __future__ import annotations

from pathlib import Path

HELPER_NAME = "_collabgen_equal"


def helper_source() -> str:
    """The factory's source and the line that builds the helper, for the generated test file."""
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\ndef _collabgen_equality(") + 1
    return f"{text[start:].rstrip()}\n\n\n{HELPER_NAME} = _collabgen_equality()\n"


# long: one closure over literal-derived types; split, its parts would need names the solution can rebind
def _collabgen_equality():  # type: ignore[no-untyped-def]
    """``equal(left, right)``: strict equality (see this module's docstring); no name lookups once built."""
    type_ = ().__class__.__class__
    none_, bool_, int_, float_ = None.__class__, True.__class__, (0).__class__, (0.0).__class__
    str_, bytes_, list_, tuple_, dict_, set_ = "".__class__, b"".__class__, [].__class__, ().__class__, {}.__class__, {0}.__class__
    frozenset_ = set_
    for const in (lambda: 0 in {0}).__code__.co_consts:
        if type_(const) is not none_ and type_(const) is not int_:
            frozenset_ = type_(const)

    def scalar(kind):  # type: ignore[no-untyped-def]
        return kind is none_ or kind is bool_ or kind is int_ or kind is float_ or kind is str_ or kind is bytes_

    def strict(kind):  # type: ignore[no-untyped-def]
        return scalar(kind) or kind is list_ or kind is tuple_ or kind is dict_ or kind is set_ or kind is frozenset_

    def plain(value):  # type: ignore[no-untyped-def]
        """A dict key or set item made of exact built-in values only."""
        kind = type_(value)
        if scalar(kind):
            return True
        if kind is tuple_ or kind is frozenset_:
            for item in value:
                if not plain(item):
                    return False
            return True
        return False

    def subclass(got, kind):  # type: ignore[no-untyped-def]
        """`got` derives from the built-in `kind` by its real layout (type's own check, not a metaclass's)."""
        return type_.__subclasscheck__(kind, got) is True

    def number(value, got):  # type: ignore[no-untyped-def]
        """A number as an exact bool, int or float, read by the built-in's own methods (an
        int subclass's real value, numpy's float64, an `__index__` that gives an exact int),
        or None when it is no number."""
        if got is bool_ or got is int_ or got is float_:
            return value
        if subclass(got, int_):
            return int_.__int__(value)
        if subclass(got, float_):
            return float_.__float__(value)
        if subclass(got, str_) or subclass(got, bytes_):
            return None
        try:
            exact = type_.__getattribute__(got, "__index__")(value)
        except Exception:
            return None
        return exact if type_(exact) is int_ else None

    def numbers(expected, result):  # type: ignore[no-untyped-def]
        """`==` between numbers as Python has it (True == 1, 5 == 5.0), on exact values only."""
        if type_(expected) is float_:
            return float_.__eq__(expected, result) is True
        if type_(result) is float_:
            return float_.__eq__(result, expected) is True
        return int_.__eq__(expected, result) is True

    def contents(kind, result, got):  # type: ignore[no-untyped-def]
        """An instance of a subclass of the container or string `kind` (Counter, OrderedDict,
        a namedtuple, a str subclass) as an exact `kind` holding its real contents: the
        subclass's own methods are never asked."""
        if kind is str_:
            return str_.__str__(result)
        if kind is bytes_:
            return bytes_.__bytes__(result)
        if kind is dict_:
            return dict_(dict_.items(result))
        if kind is set_ or kind is frozenset_:
            real = set_ if subclass(got, set_) else frozenset_
            return kind(real.__iter__(result))
        return kind(kind.__iter__(result))

    def sequence(expected, result, kind):  # type: ignore[no-untyped-def]
        size = kind.__len__(expected)
        if kind.__len__(result) != size:
            return False
        index = 0
        while index < size:
            if not same(kind.__getitem__(expected, index), kind.__getitem__(result, index)):
                return False
            index += 1
        return True

    def mapping(expected, result):  # type: ignore[no-untyped-def]
        if dict_.__len__(expected) != dict_.__len__(result):
            return False
        for key, value in dict_.items(result):
            if not plain(key) or not dict_.__contains__(expected, key):
                return False
            if not same(dict_.__getitem__(expected, key), value):
                return False
        return True

    def members(expected, result, kind):  # type: ignore[no-untyped-def]
        if kind.__len__(expected) != kind.__len__(result):
            return False
        for item in result:
            if not plain(item) or not kind.__contains__(expected, item):
                return False
        return True

    def same(expected, result):  # type: ignore[no-untyped-def]
        kind, got = type_(expected), type_(result)
        if not strict(kind):
            return expected == result
        if kind is bool_ or kind is int_ or kind is float_:
            value = number(result, got)
            return value is not None and numbers(expected, value)
        if kind is none_:
            return result is None
        sets = (kind is set_ or kind is frozenset_) and (subclass(got, set_) or subclass(got, frozenset_))
        if kind is not got:
            if not (sets or subclass(got, kind)):
                return False
            result = contents(kind, result, got)
        if scalar(kind):
            return kind.__eq__(expected, result) is True
        if kind is list_ or kind is tuple_:
            return sequence(expected, result, kind)
        if kind is dict_:
            return mapping(expected, result)
        return members(expected, result, kind)

    def equal(left, right):  # type: ignore[no-untyped-def]
        if strict(type_(right)):
            return same(right, left)
        if strict(type_(left)):
            return same(left, right)
        return left == right

    return equal
