"""Property-based tests (Hypothesis): random values and strings given to the config and manifest
parsers end in a valid result or a MedclsError with a one-line message, never another exception."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medcls.config import FIELDS, make_config, read_config_file
from medcls.data.cases import DataOptions
from medcls.data.layouts import load_csv
from medcls.errors import MedclsError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=12))


def one_line(error: Exception) -> None:
    assert str(error) and "\n" not in str(error).strip(), repr(error)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(keys, scalars, max_size=4))
def test_config_values_never_escape_as_other_exceptions(values):
    try:
        make_config(overrides=values)
    except MedclsError as error:
        one_line(error)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)), st.sampled_from([".yaml", ".toml"]))
def test_config_files_never_escape_as_other_exceptions(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"c{suffix}"
        path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
        try:
            make_config(read_config_file(path))
        except MedclsError as error:
            one_line(error)


cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None, derandomize=True)
@example(b"\r\x00")  # found by Hypothesis: cells beyond the header gave a None column name
@given(st.one_of(st.lists(st.lists(cells, min_size=1, max_size=4), max_size=6).map(
    lambda rows: "\n".join(",".join(row) for row in [["path", "label"], *rows])), st.binary(max_size=300)))
def test_manifests_never_escape_as_other_exceptions(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.csv"
        path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
        try:
            load_csv(str(path), DataOptions())
        except MedclsError as error:
            one_line(error)
