"""The competition reader: a valid folder loads; each kind of bad input gives a DataError naming file, column and
line, and never touches the input file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.cli import main
from spread.competition import check_labels, load_competition
from spread.errors import DataError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_csv(path: Path, line: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines()
    assert old in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n")


def test_valid_folder_loads(tiny_competition: Path) -> None:
    comp = load_competition(tiny_competition)
    assert comp.feature_names == ["A_Close", "B_Close", "C_Close", "A_Volume"]
    assert comp.target_names == ["target_0", "target_1", "target_2", "target_3"]
    assert comp.target_lags.tolist() == [1, 1, 2, 2]
    assert all(comp.train[c].dtype == pl.Float64 for c in comp.feature_names)
    assert comp.test["is_scored"].dtype == pl.Boolean and comp.scored_dates == [22, 23, 24, 25]
    assert sorted(comp.lagged_labels) == [1, 2]
    assert comp.train["C_Close"][5] is None


def test_all_empty_column_becomes_float_and_inf_becomes_null(tiny_competition: Path, caplog) -> None:
    path = tiny_competition / "train.csv"
    frame = pl.read_csv(path).with_columns(pl.lit(None, dtype=pl.String).alias("A_Volume"))
    path.write_text(frame.write_csv())
    _set_cell(path, 5, 1, "inf")  # line 5 = date_id 3
    comp = load_competition(tiny_competition, require_test=False)
    assert comp.train["A_Volume"].dtype == pl.Float64 and comp.train["A_Volume"].null_count() == 30
    assert comp.train["A_Close"][3] is None
    assert "A_Close" in caplog.text and "inf" in caplog.text


CASES = [
    # (file, edit, expected words in the message)
    ("train.csv", lambda p: p.unlink(), ["train.csv", "not found"]),
    ("train.csv", lambda p: edit_csv(p, 1, "date_id", "day"), ["train.csv", "date_id"]),
    ("train.csv", lambda p: edit_csv(p, 4, "2,", "1,"), ["train.csv", "line 4", "duplicate"]),
    ("train.csv", lambda p: edit_csv(p, 4, "2,", "0,"), ["train.csv", "line 4", "increasing"]),
    ("train.csv", lambda p: edit_csv(p, 6, "4,", "x,"), ["train.csv", "date_id", "line 6"]),
    ("train.csv", lambda p: _set_cell(p, 7, 2, "abc"), ["train.csv", "B_Close", "line 7", "'abc'"]),
    ("target_pairs.csv", lambda p: edit_csv(p, 2, "A_Close - B_Close", "A_Close - Z_Close"),
     ["target_pairs.csv", "line 2", "Z_Close"]),
    ("target_pairs.csv", lambda p: edit_csv(p, 3, "C_Close", "C_Close -"), ["target_pairs.csv", "line 3", "malformed"]),
    ("target_pairs.csv", lambda p: edit_csv(p, 4, ",2,", ",5,"), ["target_pairs.csv", "lag", "line 4"]),
    ("train_labels.csv", lambda p: edit_csv(p, 1, "target_3", "target_9"), ["train_labels.csv", "target_9"]),
    ("lagged_test_labels/test_labels_lag_2.csv", lambda p: _set_cell(p, 3, -1, "5"),
     ["test_labels_lag_2.csv", "label_date_id", "line 3"]),
    ("test.csv", lambda p: _set_cell(p, 2, -1, "maybe"), ["test.csv", "is_scored", "line 2"]),
]


def _set_cell(path: Path, line: int, column: int, value: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name,edit,words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_names_file_column_line_and_leaves_file_unchanged(tiny_competition, name, edit, words) -> None:
    path = tiny_competition / name
    edit(path)
    before = {p: digest(p) for p in tiny_competition.rglob("*.csv")}
    with pytest.raises(DataError) as info:
        load_competition(tiny_competition)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert before == {p: digest(p) for p in tiny_competition.rglob("*.csv")}


def test_missing_lag_file(tiny_competition: Path) -> None:
    (tiny_competition / "lagged_test_labels/test_labels_lag_1.csv").unlink()
    with pytest.raises(DataError, match="test_labels_lag_1.csv: file not found"):
        load_competition(tiny_competition)
    comp = load_competition(tiny_competition, require_test=False)
    assert comp.test is not None and sorted(comp.lagged_labels) == [2]


def test_check_labels_detects_a_changed_label(tiny_competition: Path, capsys) -> None:
    assert main(["check-labels", str(tiny_competition)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    comp = load_competition(tiny_competition)
    assert check_labels(comp).match_share == 1.0
    _set_cell(tiny_competition / "train_labels.csv", 3, 1, "0.5")
    assert main(["check-labels", str(tiny_competition), "--min-share", "0.999"]) == 1
    assert capsys.readouterr().out.strip().endswith("MISMATCH")


def test_cli_reports_data_errors_as_one_line(tiny_competition: Path, capsys) -> None:
    (tiny_competition / "target_pairs.csv").unlink()
    assert main(["check-labels", str(tiny_competition)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "target_pairs.csv: file not found" in err and "Traceback" not in err


def test_label_nan_pattern_follows_missing_prices(tiny_competition: Path) -> None:
    comp = load_competition(tiny_competition)
    labels = comp.labels["target_1"].to_numpy()  # C_Close, lag 1: uses prices t+1 and t+2; C_Close[5] missing
    assert np.isnan(labels[3]) and np.isnan(labels[4]) and not np.isnan(labels[5])


def test_trailing_blank_lines_are_not_data(tiny_competition: Path) -> None:
    for path in tiny_competition.rglob("*.csv"):
        path.write_text(path.read_text() + "\n\n")
    comp = load_competition(tiny_competition)
    assert comp.train.height == 30 and comp.pairs.height == 4 and comp.test.height == 8


def test_an_empty_train_csv_is_blamed_on_train_csv(tiny_competition: Path) -> None:
    path = tiny_competition / "train.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    for serving in (False, True):
        with pytest.raises(DataError, match=r"train\.csv: no data rows"):
            load_competition(tiny_competition, serving=serving)


def test_a_text_cell_past_polars_inference_rows(tmp_path: Path, caplog) -> None:
    """Strict: an error naming file, column and line; serving: a null and one warning naming them."""
    from conftest import write_tiny_competition

    root = write_tiny_competition(tmp_path / "comp", n_dates=150)
    _set_cell(root / "train.csv", 140, 2, "abc")
    with pytest.raises(DataError, match=r"train\.csv: column 'B_Close', line 140: 'abc' is not a number"):
        load_competition(root)
    comp = load_competition(root, serving=True)
    assert comp.train["B_Close"][138] is None and comp.train["B_Close"].null_count() == 1
    assert "line 140: 'abc' is not a number; 1 text cell(s) read as null" in caplog.text


@pytest.mark.parametrize("name", ["train.csv", "train_labels.csv"])
def test_serving_repairs_date_order_strict_mode_names_the_line(tiny_competition: Path, name: str, caplog) -> None:
    path = tiny_competition / name
    frame = pl.read_csv(path, infer_schema_length=0)
    clean = load_competition(tiny_competition, serving=True)
    changed = frame.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("9.9")).otherwise(pl.col(c))
                                 .alias(c) for c in frame.columns[1:])  # a superseded row: the later line wins
    pl.concat([frame, changed[1:2]]).reverse().write_csv(path)  # newest first, date_id 1 twice (the original last)
    with pytest.raises(DataError, match=rf"{name}: column 'date_id', line \d+: (duplicate date_id|date_id .* after)"):
        load_competition(tiny_competition)
    repaired = load_competition(tiny_competition, serving=True)
    assert "repaired: rows sorted by date_id, of a repeated date the last line kept" in caplog.text
    kept = repaired.train if name == "train.csv" else repaired.labels
    expected = clean.train if name == "train.csv" else clean.labels
    assert kept.equals(expected)  # the reversed file's last line of date 1 is the original row


def test_serving_names_the_file_line_of_a_text_cell_in_a_repaired_file(tiny_competition: Path, caplog) -> None:
    path = tiny_competition / "train.csv"
    frame = pl.read_csv(path, infer_schema_length=0)
    frame = frame.with_columns(pl.when(pl.col("date_id") == "0").then(pl.lit("abc")).otherwise(pl.col("A_Close"))
                               .alias("A_Close"))
    frame.with_columns(pl.col("date_id") + ".0").reverse().write_csv(path)  # 29.0, 28.0, ...: date 0 on the last line
    comp = load_competition(tiny_competition, serving=True)
    assert comp.train["date_id"].to_list() == list(range(frame.height))  # 12.0 is date 12; sorted
    assert f"column 'A_Close', line {frame.height + 1}: 'abc' is not a number" in caplog.text  # the file's line


@pytest.mark.parametrize("cell", ["inf", "nan", "12.5", "x"])
def test_a_date_id_that_is_not_an_integer_is_an_error_naming_the_line(tiny_competition: Path, cell: str) -> None:
    _set_cell(tiny_competition / "train.csv", 4, 0, cell)  # line 4 of the file
    with pytest.raises(DataError, match=rf"train\.csv: column 'date_id', line 4: '{cell}' is not an integer date_id"):
        load_competition(tiny_competition)


def test_a_column_name_given_twice_is_an_error_naming_the_file(tiny_competition: Path) -> None:
    path = tiny_competition / "train.csv"
    lines = path.read_text().splitlines()
    names = lines[0].split(",")
    lines[0] = ",".join([*names[:-1], names[1]])  # the last column renamed to the first feature's name
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"train\.csv: line 1: column name\(s\) given twice: \[{names[1]!r}\]"):
        load_competition(tiny_competition)


def test_in_target_order_permutes_pairs_and_labels_together(tiny_competition: Path) -> None:
    comp = load_competition(tiny_competition)
    order = comp.target_names[::-1]
    moved = comp.in_target_order(order)
    assert moved.target_names == order and moved.labels.columns == ["date_id", *order]
    assert moved.pairs.rows() == comp.pairs.rows()[::-1] and moved.labels.select(comp.labels.columns).equals(comp.labels)
    with pytest.raises(DataError, match="not this competition's"):
        comp.in_target_order([*order[:-1], "target_99"])


def test_serving_reads_only_the_training_files(tiny_competition: Path, caplog) -> None:
    """The served files are what the API passes: broken ones never stop a model from loading."""
    (tiny_competition / "test.csv").write_text("date_id,is_scored\nx,maybe\n")
    _set_cell(tiny_competition / "lagged_test_labels/test_labels_lag_2.csv", 3, -1, "5")
    labels = pl.read_csv(tiny_competition / "train_labels.csv")
    labels.select("date_id", *reversed(labels.columns[1:])).write_csv(tiny_competition / "train_labels.csv")
    with pytest.raises(DataError):
        load_competition(tiny_competition, require_test=False)
    comp = load_competition(tiny_competition, serving=True)
    assert comp.test is None and comp.lagged_labels == {}
    assert comp.labels.columns == ["date_id", *comp.target_names] and "matching them by name" in caplog.text
    np.testing.assert_array_equal(comp.labels["target_0"].to_numpy(), labels["target_0"].cast(pl.Float64).to_numpy())
