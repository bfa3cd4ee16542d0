"""Partition filters: Omnilingual's ``partition_filters`` strings, parsed without ``eval``."""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dali_asr.storage.discovery import DataFile
from dali_asr.storage.filters import describe, filter_files, parse_partition_filter

FLEURS_MLS_MINI = 'pc.is_in(pc.field("corpus"), pa.array(["mls"]))'
"""The filter of omnilingual-asr's workflows/recipes/.../eval/configs/fleurs-mls-mini.yaml."""


def data_file(corpus: str, split: str, language: str) -> DataFile:
    rel = f"corpus={corpus}/split={split}/language={language}/part-0.parquet"
    return DataFile(path=Path(rel), rel=rel, corpus=corpus, split=split, language=language)


FILES = [
    data_file("mls", "train", "fra_Latn"),
    data_file("fleurs", "train", "eng_Latn"),
    data_file("mls", "dev", "eng_Latn"),
    data_file("fleurs", "test", "fra_Latn"),
    data_file("cv", "train", "deu_Latn"),
    data_file("mls", "test", "deu_Latn"),
]


def kept(text: str | list[str] | None) -> list[tuple[str, str, str]]:
    return [(f.corpus, f.split, f.language) for f in filter_files(FILES, text)]


def reference(expression: pc.Expression) -> list[tuple[str, str, str]]:
    """What pyarrow itself keeps for a hand-built expression."""
    table = pa.table({k: [getattr(f, k) for f in FILES] for k in ("corpus", "split", "language")})
    return list(zip(*table.filter(expression).to_pydict().values(), strict=True))


F = pc.field
ACCEPTED = [
    (FLEURS_MLS_MINI, F("corpus").isin(["mls"])),
    ('pc.field("corpus").isin(["mls", "fleurs"])', F("corpus").isin(["mls", "fleurs"])),
    ('pc.field("corpus").isin(("cv",))', F("corpus") == "cv"),
    (
        '(pc.field("language") == "eng_Latn") | (pc.field("language") == "fra_Latn")',
        (F("language") == "eng_Latn") | (F("language") == "fra_Latn"),
    ),
    ('~pc.field("corpus").isin(["mls"])', ~F("corpus").isin(["mls"])),
    ('pa.compute.field("split") != "test"', F("split") != "test"),
    ('pyarrow.compute.field("split") == "dev"', F("split") == "dev"),
    ('ds.field("split") == "dev"', F("split") == "dev"),
    ('field("split") == "dev"', F("split") == "dev"),
    ('"mls" == pc.field("corpus")', F("corpus") == "mls"),
    ('"f" < pc.field("corpus")', F("corpus") > "f"),
    ('pc.field("corpus") <= "fleurs"', F("corpus") <= "fleurs"),
    ('pc.field("corpus") >= "fleurs"', F("corpus") >= "fleurs"),
    ('pc.field("corpus") < "fleurs"', F("corpus") < "fleurs"),
    ('"d" < pc.field("language") < "f"', (F("language") > "d") & (F("language") < "f")),
    (
        '(pc.field("corpus") == "mls") & (pc.field("split") == "train")',
        (F("corpus") == "mls") & (F("split") == "train"),
    ),
    (
        'pc.field("corpus") == "mls" and pc.field("split") != "train"',
        (F("corpus") == "mls") & (F("split") != "train"),
    ),
    (
        'pc.field("split") == "dev" or pc.field("corpus") == "cv"',
        (F("split") == "dev") | (F("corpus") == "cv"),
    ),
    ('not pc.field("split") == "train"', F("split") != "train"),
    ('pc.field("corpus").is_valid()', F("corpus").is_valid()),
    ('pc.field("corpus").is_null()', F("corpus").is_null()),
    (
        'pc.is_in(pc.field("split"), value_set=pa.array(["dev", "test"]))',
        F("split").isin(["dev", "test"]),
    ),
    ('pc.is_in(pc.field("split"), ["dev"])', F("split") == "dev"),
    ('pc.greater_equal(pc.field("corpus"), "fleurs")', F("corpus") >= "fleurs"),
    ('pc.greater(pc.field("corpus"), pc.scalar("fleurs"))', F("corpus") > "fleurs"),
    ('pc.equal(pc.field("corpus"), "cv")', F("corpus") == "cv"),
    ('pc.not_equal(pc.field("corpus"), "cv")', F("corpus") != "cv"),
    ('pc.less(pc.field("corpus"), "fleurs")', F("corpus") < "fleurs"),
    ('pc.less_equal(pc.field("corpus"), "fleurs")', F("corpus") <= "fleurs"),
    (
        'pc.and_(pc.field("corpus") == "mls", pc.field("split") == "dev")',
        (F("corpus") == "mls") & (F("split") == "dev"),
    ),
    (
        'pc.or_(pc.field("corpus") == "cv", pc.field("split") == "dev")',
        (F("corpus") == "cv") | (F("split") == "dev"),
    ),
    ('pc.invert(pc.field("corpus") == "mls")', F("corpus") != "mls"),
    ('pc.is_valid(pc.field("corpus"))', F("corpus").is_valid()),
    ('pc.field("corpus").isin([])', F("corpus") == "none"),
    ('  (((pc.field("corpus") == "cv")))\n', F("corpus") == "cv"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_accepted_constructs_select_what_pyarrow_selects(text: str, expected: pc.Expression):
    assert isinstance(parse_partition_filter(text), pc.Expression)
    assert kept(text) == reference(expected)


def test_fleurs_mls_mini_keeps_only_mls_in_order():
    assert kept(FLEURS_MLS_MINI) == [
        ("mls", "train", "fra_Latn"),
        ("mls", "dev", "eng_Latn"),
        ("mls", "test", "deu_Latn"),
    ]


@pytest.mark.parametrize("literal", ['"x"', "1", "-1", "+2.5", "1e3", "True"])
def test_scalar_literals(literal: str):
    parsed = parse_partition_filter(f'pc.field("split") != {literal}')
    assert parsed is not None and parsed.equals(F("split") != ast.literal_eval(literal))
    assert parse_partition_filter(f'pc.field("split").isin([{literal}, {literal}])') is not None


def test_list_is_and_ed_and_empty_is_none():
    both = ['pc.field("corpus") == "mls"', 'pc.field("split") != "train"', "  "]
    assert kept(both) == [("mls", "dev", "eng_Latn"), ("mls", "test", "deu_Latn")]
    for nothing in (None, "", "   ", [], [""]):
        assert parse_partition_filter(nothing) is None
        assert filter_files(FILES, nothing) == FILES
    built = F("split") == "dev"
    assert parse_partition_filter(built) is built
    assert parse_partition_filter([built, 'pc.field("corpus") == "mls"']) is not None


def test_filter_files_keeps_order_and_handles_no_files():
    files = list(reversed(FILES))
    assert filter_files(files, 'pc.field("split") == "train"') == [
        f for f in files if f.split == "train"
    ]
    assert filter_files([], FLEURS_MLS_MINI) == []
    assert filter_files(FILES, F("corpus") == "nothing") == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("__import__('os').system('x')", "__import__('os').system"),
        ("open('f')", "calling open"),
        ("exec('1')", "calling exec"),
        ('pc.field("corpus").__class__', ".__class__"),
        ("().__class__.__bases__[0].__subclasses__()", "__subclasses__"),
        ('pc.field("corpus").isin.__globals__', "__globals__"),
        ('pc.field("corpus").cast("int64") == 1', 'cast("int64")'),
        ("pa.compute.list_flatten(pc.field('corpus'))", "pa.compute.list_flatten"),
        ("pc.field", "pc.field"),
        ("corpus", "names are not accepted in 'corpus'"),
        ('pc.field(corpus) == "x"', "a field name must be a string literal"),
        ('pc.field("a", "b") == "x"', "exactly one argument"),
        ("lambda: 1", "lambdas"),
        ('pc.field("corpus") == [x for x in "ab"]', "ListComp"),
        ('pc.field("corpus")[0] == "x"', "subscripts"),
        ('pc.field("corpus") == f"{1}"', "f-strings"),
        ('pc.field("corpus") == None', "'None'"),
        ('pc.field("corpus") == b"x"', "'b\"x\"'"),
        ('pc.field("corpus") == ("a", ["b"])', "nested lists"),
        ('pc.field("corpus") in ["mls"]', ".isin"),
        ('pc.field("corpus") is None', "operator Is"),
        ('pc.field("corpus") == ["mls"]', "a list cannot be compared"),
        ('pc.field("corpus") == "mls" & pc.field("split") == "dev"', "put parentheses"),
        ('"a" == "a"', "a field on one side"),
        ('"mls"', "expected an expression over a field, got 'mls'"),
        ('pc.equal("a", "a")', "the call involves no field"),
        ('pc.field("corpus").isin("mls")', ".isin() takes a list"),
        ('pc.field("corpus").is_null(True)', "wrong arguments to .is_null()"),
        ('pc.is_in(pc.field("corpus"), options=None)', "no keyword but value_set"),
        ('pc.field("corpus") ==', "not valid Python syntax"),
        ('pc.field("corpus") + "x"', "BinOp"),
        ('pc.field("dataset") == "x"', "unknown partition field 'dataset'"),
    ],
)
def test_rejected_with_the_fragment_quoted(text: str, fragment: str):
    with pytest.raises(ValueError, match="accepted") as info:
        parse_partition_filter(text)
    assert fragment in str(info.value)
    assert repr(text.strip()) in str(info.value)


def test_errors_name_the_field_and_list_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'lang'.*corpus, split, language"):
        parse_partition_filter('pc.field("lang") == "eng_Latn"')
    # Expressions built in code bypass the parser's check; filter_files still names the field.
    with pytest.raises(ValueError, match=r"'lang'.*corpus, split, language"):
        filter_files(FILES, F("lang") == "eng_Latn")
    assert parse_partition_filter('pc.field("lang") == "x"', fields=None) is not None


def test_wrong_types_and_bad_values_are_value_errors():
    with pytest.raises(ValueError, match="all strings"):
        filter_files(FILES, 'pc.field("corpus") == 1')
    with pytest.raises(ValueError, match="all strings"):
        filter_files(FILES, 'pc.field("corpus").is_valid() & pc.field("split")')
    with pytest.raises(ValueError, match="string or a list of strings"):
        parse_partition_filter({"corpus": "mls"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'pa\.array\(\["a", 1\]\)'):
        parse_partition_filter('pc.is_in(pc.field("corpus"), pa.array(["a", 1]))')
    with pytest.raises(ValueError, match="partition filter"):
        parse_partition_filter('pc.field("corpus").isin(["a", 1])')


def test_describe_is_one_line():
    assert describe(None) == "no partition filter"
    line = describe(parse_partition_filter(FLEURS_MLS_MINI))
    assert "\n" not in line and '"mls"' in line and "corpus" in line
