"""Benchmark CSV tables: reading, validation (one line per problem), lookups, the synthetic table."""
import numpy as np
import pytest

from enas.benchmark.synthetic import COLUMN_ORDER, synthetic_columns, synthetic_table, write_synthetic
from enas.benchmark.table import BenchmarkTable, read_table, write_table
from enas.errors import UserError
from shared_model.nb201_arch import NB201Arch

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
CUT = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # node 3 reads nothing


@pytest.fixture(scope="module")
def syn():
    return synthetic_table(0)


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path):
    with pytest.raises(UserError) as info:
        read_table(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_reads_a_small_table_and_looks_cells_up(tmp_path):
    path = write(tmp_path, f"arch,test_acc,train_time_s\n{BEST},94.1,150\n{SKIP},54.3,40.5\n")
    table = read_table(path)
    assert len(table) == 2 and table.columns == ("test_acc", "train_time_s") and not table.complete
    assert table.value(NB201Arch.from_string(SKIP), "train_time_s") == 40.5
    assert table.row(NB201Arch.from_string(BEST)) == {"test_acc": 94.1, "train_time_s": 150.0}
    assert table.best("test_acc")[0].to_string() == BEST
    assert table.rank(NB201Arch.from_string(SKIP), "test_acc") == 2
    assert len(table.sha256) == 64
    with pytest.raises(UserError, match="not in benchmark table .* partial table: 2 of 15625"):
        table.value(NB201Arch.from_string(CUT), "test_acc")
    with pytest.raises(UserError, match="no column 'valid_acc'"):
        table.require(["valid_acc"])


def test_columns_in_any_order_with_bom_and_blank_lines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(("\ufefftest_acc,arch\n\n94.0," + BEST + "\n\n").encode())
    assert read_table(path).value(NB201Arch.from_string(BEST), "test_acc") == 94.0


@pytest.mark.parametrize("text, expected", [
    ("", "is empty"),
    ("arch,test_acc\n", "has a header but no rows"),
    ("name,test_acc\nx,1\n", "has no 'arch' column"),
    ("arch\n" + BEST + "\n", "no metric columns"),
    ("arch,test_acc,test_acc\n" + BEST + ",1,2\n", "column 'test_acc' appears twice"),
    ("arch,test_acc\n" + BEST + ",1\n" + SKIP + ",2\n" + BEST + ",3\n", "line 4: architecture .* appears twice \\(first on line 2\\)"),
    ("arch,test_acc\n|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n", "line 2: node 1: unknown op 'conv'"),
    ("arch,test_acc\n|none~0|+|none~0|,1\n", "line 2: architecture string needs 3"),
    ("arch,test_acc\n" + BEST + ",high\n", "line 2: column 'test_acc' holds 'high', not a number"),
    ("arch,test_acc\n" + BEST + ",nan\n", "line 2: column 'test_acc' holds 'nan'; values must be finite"),
    ("arch,test_acc\n" + BEST + ",inf\n", "values must be finite"),
    ("arch,test_acc\n" + BEST + ",1,2\n", "line 2: 3 fields, the header has 2"),
    ("arch,\n" + BEST + ",1\n", "empty column name"),
])
def test_every_malformed_table_is_one_line(tmp_path, text, expected):
    import re
    assert re.search(expected, error_of(write(tmp_path, text)))


def test_missing_and_binary_files(tmp_path):
    assert "not found" in error_of(tmp_path / "absent.csv")
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in error_of(path)


def test_write_then_read_round_trips(tmp_path):
    archs = [NB201Arch.from_string(BEST), NB201Arch.from_string(SKIP)]
    path = write_table(tmp_path / "out.csv", archs, {"test_acc": [94.12345, 54.3], "train_time_s": [1, 2]})
    table = read_table(path)
    assert table.archs == tuple(archs) and table.value(archs[0], "test_acc") == 94.1235
    with pytest.raises(UserError, match="appears twice"):
        BenchmarkTable(archs * 2, ["x"], np.zeros((4, 1)))


def test_synthetic_table_has_the_documented_structure(syn):
    assert syn.complete and syn.columns == COLUMN_ORDER
    test = syn.column("test_acc")
    assert 94.0 < test.max() < 94.8 and 87.0 < np.median(test) < 90.0
    assert abs(syn.value(NB201Arch.from_string(SKIP), "test_acc") - 54.3) < 1.5
    # Node 3 cut off from node 0 (through non-none edges): chance on every accuracy column.
    for arch in (CUT, "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"):
        row = syn.row(NB201Arch.from_string(arch))
        assert all(abs(row[c] - 10.0) < 0.5 for c in ("valid_acc_epoch12", "valid_acc", "test_acc"))
    # Convolutions cost simulated time, even on dead edges.
    t = lambda s: syn.value(NB201Arch.from_string(s), "train_time_s")  # noqa: E731
    assert t(BEST) > t(SKIP) > t("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert t(CUT) > t("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    # The 12-epoch reward is a correlated but imperfect proxy of the reported accuracy.
    v12 = syn.column("valid_acc_epoch12")
    assert 0.9 < np.corrcoef(v12, test)[0, 1] < 0.9999 and (v12 < test).mean() > 0.9


def test_synthetic_table_is_deterministic_per_seed(tmp_path):
    a = write_synthetic(tmp_path / "a.csv", seed=3).read_bytes()
    b = write_synthetic(tmp_path / "b.csv", seed=3).read_bytes()
    c = write_synthetic(tmp_path / "c.csv", seed=4).read_bytes()
    assert a == b and a != c and len(a.splitlines()) == 15626
    table = read_table(tmp_path / "a.csv")
    _, cols = synthetic_columns(3)
    assert np.allclose(table.column("test_acc"), cols["test_acc"], atol=1e-4)
