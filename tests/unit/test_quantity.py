import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wharf.core.quantity import (
    QuantityError,
    add,
    exceeding,
    format_quantity,
    format_resources,
    parse_quantity,
    parse_resources,
    smallest_unit,
    split_quantity,
    subtract,
)

F = Fraction
KI, MI, GI, TI, PI, EI = (2**10 * n for n in (1, 2**10, 2**20, 2**30, 2**40, 2**50))

RESOURCES = [
    "cpu",
    "requests.cpu",
    "limits.cpu",
    "memory",
    "requests.memory",
    "limits.memory",
    "requests.storage",
    "ephemeral-storage",
    "pods",
    "nvidia.com/gpu",
    "",
]


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", F(0)),
        ("2", F(2)),
        ("1.5", F(3, 2)),
        (".5", F(1, 2)),
        ("2.", F(2)),
        ("007", F(7)),
        ("+3", F(3)),
        ("-3", F(-3)),
        ("-.5", F(-1, 2)),
        # binary SI
        ("1Ki", F(KI)),
        ("1Mi", F(MI)),
        ("1Gi", F(GI)),
        ("1Ti", F(TI)),
        ("1Pi", F(PI)),
        ("1Ei", F(EI)),
        ("1.5Gi", F(3 * GI, 2)),
        ("0.5Ki", F(512)),
        # decimal SI
        ("1n", F(1, 10**9)),
        ("1u", F(1, 10**6)),
        ("500m", F(1, 2)),
        ("1k", F(1000)),
        ("10M", F(10**7)),
        ("1G", F(10**9)),
        ("1T", F(10**12)),
        ("1P", F(10**15)),
        ("1E", F(10**18)),
        ("2.5k", F(2500)),
        ("0.1m", F(1, 10**4)),
        # decimal exponent
        ("1e3", F(1000)),
        ("1E3", F(1000)),
        ("1.5E-2", F(3, 200)),
        ("2e+2", F(200)),
        ("5e0", F(5)),
        ("-1e-3", F(-1, 1000)),
    ],
)
def test_parse_every_form(text, value):
    assert parse_quantity(text) == value


def test_parse_takes_integers_as_they_are():
    assert parse_quantity(3) == F(3)
    assert parse_quantity(-2) == F(-2)


def test_milli_and_mega_are_different():
    assert parse_quantity("1m") == F(1, 1000)
    assert parse_quantity("1M") == F(10**6)


def test_parsing_is_exact_where_floats_are_not():
    assert parse_quantity("0.1") + parse_quantity("0.2") == parse_quantity("0.3")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "12x",
        "1 Gi",
        " 1",
        "1 ",
        "1\n",
        "Gi",
        "m",
        ".",
        "+",
        "-",
        "1.2.3",
        "1K",  # decimal kilo is lower-case k
        "1gi",
        "1GiB",
        "1Gi1",
        "1e",
        "1e3.5",
        "1e3Gi",
        "1mm",
        "--1",
        "0x10",
        "1_000",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: only ASCII digits count
        "1e999999999",
        "1" * 200,
    ],
)
def test_parse_rejects(text):
    with pytest.raises(QuantityError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


def test_error_message_names_the_text_and_gives_examples():
    with pytest.raises(QuantityError) as info:
        parse_quantity("12x")
    assert str(info.value) == ("'12x' is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 10M)")


def test_quantity_error_is_a_value_error():
    assert issubclass(QuantityError, ValueError)


@pytest.mark.parametrize("bad", [True, 1.5, None, b"1"])
def test_parse_rejects_other_types(bad):
    with pytest.raises(QuantityError):
        parse_quantity(bad)


# --- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "resource", "text"),
    [
        (F(0), "", "0"),
        (F(0), "memory", "0"),
        (F(2), "cpu", "2"),
        (F(3, 2), "cpu", "1500m"),
        (F(1, 1000), "cpu", "1m"),
        (F(-1, 2), "cpu", "-500m"),
        (F(1, 10**6), "cpu", "1u"),
        (F(1, 10**9), "cpu", "1n"),
        (F(1500, 10**9), "cpu", "1500n"),
        (F(GI), "memory", "1Gi"),
        (F(1536 * MI), "memory", "1536Mi"),
        (F(KI), "requests.memory", "1Ki"),
        (F(3 * EI), "limits.memory", "3Ei"),
        (F(4 * EI * KI), "memory", "4096Ei"),
        (F(2 * TI), "requests.storage", "2Ti"),
        (F(10 * GI), "ephemeral-storage", "10Gi"),
        (F(-GI), "memory", "-1Gi"),
        (F(1000), "memory", "1000"),
        (F(10**9), "memory", "1000000000"),
        (F(GI), "pods", "1073741824"),
        (F(GI), "cpu", "1073741824"),
        (F(3, 2), "memory", "1500m"),
        (5, "", "5"),
    ],
)
def test_format(value, resource, text):
    assert format_quantity(value, resource) == text


def test_format_examples_from_text():
    assert format_quantity(parse_quantity("1024Mi"), "memory") == "1Gi"
    assert format_quantity(parse_quantity("1536Mi"), "memory") == "1536Mi"
    assert format_quantity(parse_quantity("1.5"), "cpu") == "1500m"
    assert format_quantity(parse_quantity("1e3"), "cpu") == "1000"


@pytest.mark.parametrize("value", [F(1, 3), F(1, 10**10), F(1, 2**10)])
def test_format_refuses_what_it_cannot_write_exactly(value):
    with pytest.raises(QuantityError, match="cannot be written exactly"):
        format_quantity(value)


# --- smallest unit and splitting -----------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "unit"),
    [
        ("cpu", F(1, 1000)),
        ("requests.cpu", F(1, 1000)),
        ("limits.cpu", F(1, 1000)),
        ("memory", F(1)),
        ("requests.storage", F(1)),
        ("pods", F(1)),
        ("nvidia.com/gpu", F(1)),
        ("mycpu", F(1)),
    ],
)
def test_smallest_unit(resource, unit):
    assert smallest_unit(resource) == unit


def test_split_examples():
    assert split_quantity(parse_quantity("1"), 3, "cpu") == [
        F(334, 1000),
        F(333, 1000),
        F(333, 1000),
    ]
    assert split_quantity(F(10), 4, "pods") == [F(3), F(3), F(2), F(2)]
    assert split_quantity(F(2), 5, "nvidia.com/gpu") == [F(1), F(1), F(0), F(0), F(0)]
    assert split_quantity(F(GI), 1, "memory") == [F(GI)]
    assert split_quantity(F(0), 3, "cpu") == [F(0), F(0), F(0)]


def test_split_rounds_a_total_that_is_not_whole_units_down():
    assert split_quantity(F(7, 2), 2, "pods") == [F(2), F(1)]
    assert split_quantity(parse_quantity("1001500u"), 2, "cpu") == [F(501, 1000), F(500, 1000)]


@pytest.mark.parametrize("parts", [0, -1])
def test_split_needs_at_least_one_part(parts):
    with pytest.raises(ValueError, match="at least 1"):
        split_quantity(F(1), parts, "cpu")


def test_split_refuses_a_negative_total():
    with pytest.raises(ValueError, match="negative"):
        split_quantity(F(-1), 2, "cpu")


# --- resource lists ------------------------------------------------------------------------


def test_parse_resources():
    assert parse_resources({"cpu": "500m", "memory": "1Gi", "pods": 10}) == {
        "cpu": F(1, 2),
        "memory": F(GI),
        "pods": F(10),
    }


def test_parse_resources_names_the_path_of_a_bad_value():
    with pytest.raises(QuantityError) as info:
        parse_resources({"memory": "1Gi", "cpu": "12x"}, where="spec.quota.hard")
    assert str(info.value) == (
        "spec.quota.hard.cpu: '12x' is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 10M)"
    )


def test_parse_resources_without_a_path_names_the_key():
    with pytest.raises(QuantityError, match=r"^cpu: '' is not a Kubernetes quantity"):
        parse_resources({"cpu": ""})


def test_parse_resources_rejects_negative_values():
    with pytest.raises(QuantityError, match=r"^spec\.quota\.hard\.memory: '-1Gi'.*must be >= 0"):
        parse_resources({"memory": "-1Gi"}, where="spec.quota.hard")


def test_add_and_subtract_count_missing_keys_as_zero():
    a = {"cpu": F(1), "memory": F(GI)}
    b = {"cpu": F(1, 2), "pods": F(3)}
    assert add(a, b) == {"cpu": F(3, 2), "memory": F(GI), "pods": F(3)}
    assert subtract(a, b) == {"cpu": F(1, 2), "memory": F(GI), "pods": F(-3)}


def test_exceeding():
    limit = {"cpu": F(2), "memory": F(GI), "pods": F(10)}
    amount = {"cpu": F(5, 2), "memory": F(GI), "pods": F(3), "services": F(100)}
    assert exceeding(limit, amount) == {"cpu": F(1, 2)}
    assert exceeding(limit, {"cpu": F(2)}) == {}


def test_format_resources_sorts_and_uses_the_key_as_resource():
    amounts = {"requests.memory": F(2 * GI), "cpu": F(3, 2), "pods": F(GI)}
    formatted = format_resources(amounts)
    assert formatted == {"cpu": "1500m", "pods": "1073741824", "requests.memory": "2Gi"}
    assert list(formatted) == ["cpu", "pods", "requests.memory"]


def test_quota_sums_hold_exactly():
    hard = parse_resources({"cpu": "1", "memory": "1Gi"})
    shares = [split_quantity(hard[name], 3, name) for name in ("cpu", "memory")]
    used: dict[str, Fraction] = {}
    for cpu, memory in zip(*shares, strict=True):
        used = add(used, {"cpu": cpu, "memory": memory})
    assert used == hard
    assert exceeding(hard, used) == {}
    assert subtract(hard, used) == {"cpu": F(0), "memory": F(0)}


def test_module_is_pure_standard_library():
    code = (
        "import sys, wharf.core.quantity\n"
        "bad = {'fastapi', 'sqlalchemy', 'lightkube'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- properties ----------------------------------------------------------------------------

digits = st.text(alphabet="0123456789", min_size=1, max_size=12)
suffixes = st.sampled_from(
    ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"]
) | st.builds(
    lambda e, sign, n: f"{e}{sign}{n}",
    st.sampled_from("eE"),
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 30),
)


@st.composite
def quantity_texts(draw):
    sign = draw(st.sampled_from(["", "+", "-"]))
    shape = draw(st.sampled_from(["int", "int.frac", ".frac", "int."]))
    whole, frac = draw(digits), draw(digits)
    number = {"int": whole, "int.frac": f"{whole}.{frac}", ".frac": f".{frac}", "int.": f"{whole}."}
    return f"{sign}{number[shape]}{draw(suffixes)}"


resources = st.sampled_from(RESOURCES)


@given(quantity_texts(), resources)
def test_format_of_parse_round_trips(text, resource):
    value = parse_quantity(text)
    if (value * 10**9).denominator == 1:
        formatted = format_quantity(value, resource)
        assert parse_quantity(formatted) == value
        assert format_quantity(parse_quantity(formatted), resource) == formatted
    else:
        with pytest.raises(QuantityError):
            format_quantity(value, resource)


@given(st.integers(-(10**30), 10**30), st.sampled_from([1, 10**3, 10**6, 10**9]), resources)
def test_every_nano_multiple_round_trips(numerator, scale, resource):
    value = F(numerator, scale)
    formatted = format_quantity(value, resource)
    assert parse_quantity(formatted) == value
    assert " " not in formatted


@given(st.integers(-(2**20), 2**20), st.sampled_from([KI, MI, GI, TI, PI, EI]), resources)
def test_memory_byte_counts_round_trip(count, size, resource):
    value = F(count * size)
    assert parse_quantity(format_quantity(value, resource)) == value


totals = st.builds(F, st.integers(0, 10**15), st.sampled_from([1, 2, 3, 1000, 10**6, 7919]))


@given(totals, st.integers(1, 64), resources)
def test_split_properties(total, parts, resource):
    unit = smallest_unit(resource)
    shares = split_quantity(total, parts, resource)
    assert len(shares) == parts
    assert all(share >= 0 for share in shares)
    assert all((share / unit).denominator == 1 for share in shares)
    assert max(shares) - min(shares) <= unit
    assert shares == sorted(shares, reverse=True)
    rounded_down = (total // unit) * unit
    assert sum(shares) == rounded_down
    if (total / unit).denominator == 1:
        assert sum(shares) == total
    for share in shares:
        assert parse_quantity(format_quantity(share, resource)) == share
