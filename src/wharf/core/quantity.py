"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``1e3``) as exact fractions.

Quotas are checked by adding up what every namespace asks for and comparing the sum with
a limit, and a limit is handed out by splitting it into shares. With floats those sums
drift (``0.1 + 0.2 != 0.3``), so a request that exactly fills a quota could be refused or
shares could add up to more than the whole. Every value here is a
:class:`fractions.Fraction`, so sums, differences and splits hold exactly, and
:func:`format_quantity` prints a value back in a form Kubernetes reads as the same number.

Pure standard library: the web layer, the store and the Kubernetes client all use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction

__all__ = [
    "QuantityError",
    "ResourceAmounts",
    "ResourceList",
    "add",
    "exceeding",
    "format_quantity",
    "format_resources",
    "parse_quantity",
    "parse_resources",
    "smallest_unit",
    "split_quantity",
    "subtract",
]

ResourceList = dict[str, str]
"""Resource name -> quantity text, as in a Kubernetes ``ResourceList``."""

ResourceAmounts = dict[str, Fraction]
"""Resource name -> exact amount."""

_EXAMPLES = "examples: 500m, 2, 1.5Gi, 10M"

# Longest text and largest decimal exponent accepted: far beyond any real quantity, but
# small enough that a hostile "1e999999999" cannot make us build an enormous integer.
_MAX_TEXT = 100
_MAX_EXPONENT = 100

_BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}

_DECIMAL_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

# sign, integer digits, fraction digits, then at most one suffix. "E" alone is exa, "E3"
# is an exponent; the alternatives are tried in order and the match must reach the end.
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?|\.(?P<frac_only>[0-9]+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)"
    r"|[eE](?P<exp>[+-]?[0-9]+)"
    r"|(?P<decimal>[numkMGTPE]))?"
)

# Binary suffixes from the largest down, for formatting memory.
_BINARY_DESCENDING = sorted(_BINARY_SUFFIXES.items(), key=lambda item: item[1], reverse=True)

# Sub-unit suffixes for formatting non-integers, from the coarsest.
_FINE_SUFFIXES = (("m", 10**3), ("u", 10**6), ("n", 10**9))


class QuantityError(ValueError):
    """A text that is not a Kubernetes quantity, or a value that cannot be written as one."""


def _not_a_quantity(text: object, why: str = "") -> QuantityError:
    detail = f"; {why}" if why else ""
    return QuantityError(f"{text!r} is not a Kubernetes quantity ({_EXAMPLES}){detail}")


def parse_quantity(text: str | int) -> Fraction:
    """Read a Kubernetes quantity exactly.

    Accepts an optional sign, a decimal number (``2``, ``1.5``, ``.5``, ``2.``) and at most
    one suffix: binary ``Ki Mi Gi Ti Pi Ei``, decimal ``n u m k M G T P E`` (``m`` is milli,
    ``M`` is mega) or a decimal exponent ``e3`` / ``E-2``. Negative values are returned as
    such; whether they are allowed is for the caller to decide. An ``int`` is taken as is.
    """
    if isinstance(text, bool):
        raise _not_a_quantity(text)
    if isinstance(text, int):
        return Fraction(text)
    if not isinstance(text, str):
        raise _not_a_quantity(text)
    if len(text) > _MAX_TEXT:
        raise _not_a_quantity(text, f"longer than {_MAX_TEXT} characters")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise _not_a_quantity(text)

    digits_before = match["int"] or ""
    digits_after = match["frac"] if match["frac"] is not None else match["frac_only"] or ""
    mantissa = Fraction(int(digits_before + digits_after or "0"), 10 ** len(digits_after))

    if match["binary"] is not None:
        multiplier = Fraction(_BINARY_SUFFIXES[match["binary"]])
    elif match["exp"] is not None:
        exponent = int(match["exp"])
        if abs(exponent) > _MAX_EXPONENT:
            raise _not_a_quantity(text, f"exponent beyond ±{_MAX_EXPONENT}")
        multiplier = Fraction(10) ** exponent
    else:
        multiplier = _DECIMAL_SUFFIXES[match["decimal"] or ""]

    value = mantissa * multiplier
    return -value if match["sign"] == "-" else value


def _is_memory_like(resource: str) -> bool:
    return resource.endswith(("memory", "storage"))


def format_quantity(value: Fraction | int, resource: str = "") -> str:
    """Write ``value`` as a short quantity that :func:`parse_quantity` reads back exactly.

    Integers print plainly (``2``), except for memory-like resources (names ending in
    ``memory`` or ``storage``), where a byte count divisible by a binary suffix takes the
    largest one (``1073741824`` -> ``1Gi``, ``1536Mi`` stays ``1536Mi``). Other values
    print in whole millis, micros or nanos (``3/2`` -> ``1500m``); a value finer than a
    nano cannot be written exactly and raises :class:`QuantityError`.
    """
    value = Fraction(value)
    if value.denominator == 1:
        number = value.numerator
        if number != 0 and _is_memory_like(resource):
            for suffix, size in _BINARY_DESCENDING:
                if number % size == 0:
                    return f"{number // size}{suffix}"
        return str(number)
    for suffix, scale in _FINE_SUFFIXES:
        scaled = value * scale
        if scaled.denominator == 1:
            return f"{scaled.numerator}{suffix}"
    raise QuantityError(
        f"{value} cannot be written exactly as a Kubernetes quantity (finer than 1n)"
    )


def _is_cpu_like(resource: str) -> bool:
    return resource == "cpu" or resource.endswith(".cpu")


def smallest_unit(resource: str) -> Fraction:
    """The finest step a share of ``resource`` is cut to: a milli-CPU, else one whole unit.

    Bytes, object counts and GPUs are indivisible; CPU is counted in millicores.
    """
    return Fraction(1, 1000) if _is_cpu_like(resource) else Fraction(1)


def split_quantity(total: Fraction, parts: int, resource: str) -> list[Fraction]:
    """Split ``total`` into ``parts`` shares, as even as possible, in units of ``resource``.

    Every share is a non-negative multiple of :func:`smallest_unit`; shares differ by at
    most one unit and the larger ones come first. They sum exactly to ``total`` when it is
    a multiple of the unit; otherwise ``total`` is first rounded down to one.
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"cannot split into {parts!r} parts: need at least 1")
    total = Fraction(total)
    if total < 0:
        raise ValueError(f"cannot split a negative amount ({total})")
    unit = smallest_unit(resource)
    units = total // unit  # rounds down to a whole number of units
    base, extra = divmod(units, parts)
    return [(base + 1) * unit] * extra + [base * unit] * (parts - extra)


def parse_resources(d: Mapping[str, str | int], where: str = "") -> ResourceAmounts:
    """Parse every quantity of a resource list; all must be >= 0.

    ``where`` is the path of the list in the request (``spec.quota.hard``) so that an error
    names the exact field: ``spec.quota.hard.cpu: '12x' is not a Kubernetes quantity ...``.
    """
    amounts: ResourceAmounts = {}
    for name, text in d.items():
        path = f"{where}.{name}" if where else name
        try:
            value = parse_quantity(text)
        except QuantityError as error:
            raise QuantityError(f"{path}: {error}") from None
        if value < 0:
            raise QuantityError(f"{path}: {text!r} is negative; quantities must be >= 0")
        amounts[name] = value
    return amounts


def add(a: Mapping[str, Fraction], b: Mapping[str, Fraction]) -> ResourceAmounts:
    """Key-wise ``a + b``; a resource missing on one side counts as 0."""
    return {name: a.get(name, Fraction(0)) + b.get(name, Fraction(0)) for name in _keys(a, b)}


def subtract(a: Mapping[str, Fraction], b: Mapping[str, Fraction]) -> ResourceAmounts:
    """Key-wise ``a - b``; a resource missing on one side counts as 0 (results may be < 0)."""
    return {name: a.get(name, Fraction(0)) - b.get(name, Fraction(0)) for name in _keys(a, b)}


def exceeding(limit: Mapping[str, Fraction], amount: Mapping[str, Fraction]) -> ResourceAmounts:
    """By how much ``amount`` goes over ``limit``, for each limited resource that it does.

    Resources of ``amount`` that ``limit`` does not mention are not limited and ignored; an
    empty result means ``amount`` fits.
    """
    return {
        name: value - limit[name]
        for name, value in amount.items()
        if name in limit and value > limit[name]
    }


def format_resources(d: Mapping[str, Fraction]) -> ResourceList:
    """Write every amount with :func:`format_quantity`, keyed and sorted by resource name."""
    return {name: format_quantity(d[name], name) for name in sorted(d)}


def _keys(a: Mapping[str, Fraction], b: Mapping[str, Fraction]) -> list[str]:
    return sorted(a.keys() | b.keys())
