"""Tests for tradebox.runner: running one snippet and describing the outcome."""

import base64
import io
import json
import linecache
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from tradebox.runner import CAPS, VALUE_ROWS, encode, run

KEYS = {"success", "result", "value", "output", "error", "execution_time_ms", "artifacts"}


def go(code, helpers=None, **kw):
    """run() plus the checks every result must pass: exact keys, strict JSON,
    an answer frame the supervisor accepts."""
    res = run(code, helpers or {}, **kw)
    assert set(res) == KEYS
    json.dumps(res, allow_nan=False)
    assert isinstance(res["execution_time_ms"], int) and res["execution_time_ms"] >= 0
    assert res["success"] is (res["error"] is None)
    assert_strict_frame(encode(res, kw.get("caps")), kw.get("caps"))
    return res


def assert_strict_frame(data, caps=None):
    """UTF-8 JSON with no lone surrogate, no NaN, integers within 64 bits,
    within the caps."""
    caps = {**CAPS, **(caps or {})}
    assert len(data) <= caps["result_bytes"]

    def check(x):
        if isinstance(x, str):
            assert not re.search("[\ud800-\udfff]", x), x
        elif isinstance(x, bool) or x is None:
            pass
        elif isinstance(x, int):
            assert -(1 << 63) <= x < (1 << 63), x
        elif isinstance(x, dict):
            for k, v in x.items():
                check(k)
                check(v)
        elif isinstance(x, list):
            for v in x:
                check(v)

    def no_constant(name):
        raise AssertionError(f"{name} in the frame")

    frame = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    check(frame)
    assert len(frame["artifacts"]) <= caps["artifacts"]
    return frame


def ok(code, helpers=None, **kw):
    res = go(code, helpers, **kw)
    assert res["success"], res["error"]
    return res


def failed(code, type_, helpers=None, **kw):
    res = go(code, helpers, **kw)
    assert not res["success"]
    err = res["error"]
    assert err["type"] == type_, err
    return err


def snippet_frames_only(traceback_text, filename="<snippet>"):
    files = re.findall(r'^  File "([^"]+)"', traceback_text, re.M)
    return files and all(f == filename for f in files)


@pytest.fixture
def trades():
    return pd.DataFrame({
        "timestamp": pd.date_range("2024-03-01", periods=5, freq="h", tz="UTC"),
        "exchange": ["binance", "kraken", "binance", "okx", "kraken"],
        "amount": [1.5, 2.25, 2.0, 1234567.891, 0.75],
        "price": [0.0000123, 1.0, np.nan, 65000.5, 2.0],
    })


# ---- result convention -------------------------------------------------------

def test_result_variable():
    res = ok("result = 1 + 1")
    assert res["result"] == "2"
    assert res["value"] == {"type": "scalar", "value": 2}
    assert res["output"] == "" and res["artifacts"] == []


def test_last_expression_is_the_result():
    res = ok("x = 3\nx * 2")
    assert res["result"] == "6" and res["value"] == {"type": "scalar", "value": 6}


def test_result_variable_wins_over_last_expression():
    res = ok("result = 'from result'\n'last expression'")
    assert res["result"] == "from result"
    assert res["value"] == {"type": "scalar", "value": "from result"}


def test_no_result():
    res = ok("x = 1")
    assert res["result"] is None and res["value"] is None


def test_text_forms():
    assert ok("np.float64(2.5)")["result"] == "2.5"
    assert ok("np.float64(2.5)")["value"] == {"type": "scalar", "value": 2.5}
    assert ok("'a\\nb'")["result"] == "a\nb"
    assert ok("pd.Timestamp('2024-01-02', tz='UTC')")["value"] == {
        "type": "scalar", "value": "2024-01-02T00:00:00+00:00"}
    assert ok("float('nan')")["value"] == {"type": "scalar", "value": None}
    res = ok("class Thing:\n    def __repr__(self):\n        return 'Thing()'\nThing()")
    assert res["result"] == "Thing()" and res["value"] == {"type": "text"}


def test_pre_imports_and_helpers():
    res = ok("result = [pd.__name__, np.__name__, datetime(2024, 1, 1).year,"
             " timedelta(days=1).days, math.sqrt(4), statistics.mean([1, 3]),"
             " plt.__name__, params['n']]", {"params": {"n": 7}})
    assert res["value"]["value"] == ["pandas", "numpy", 2024, 1, 2.0, 2, "matplotlib.pyplot", 7]


def test_globals_do_not_leak_between_runs():
    ok("secret = 42\nimport os", {"helper": 1})
    for name in ("secret", "os", "helper"):
        err = failed(name, "NameError")
        assert name in err["message"]


# ---- output -----------------------------------------------------------------

def test_print_captured():
    assert ok("print('hello')\nprint('world', 2)")["output"] == "hello\nworld 2\n"


def test_stderr_captured_in_order():
    res = ok("import sys\nprint('a')\nprint('b', file=sys.stderr)\nsys.stdout.write('c\\n')")
    assert res["output"] == "a\nb\nc\n"


def test_output_truncated_with_note():
    limit = 10 * 1024
    res = ok("for _ in range(50_000):\n    print('x' * 99)", output_limit=limit)
    out = res["output"]
    kept, note = out.rsplit("\n", 1)
    assert note == "... output truncated: 4.8 MiB more not shown (limit 10.0 KiB)"
    assert len(kept.encode()) <= limit and kept.startswith("x" * 99 + "\n")
    assert len(out.encode()) < limit + 100


def test_output_truncated_at_character_boundary():
    res = ok("print('é' * 1_000_000)\nprint('never shown')", output_limit=1001)
    kept, note = res["output"].rsplit("\n", 1)
    assert kept == "é" * 500 and note.startswith("... output truncated: 1.9 MiB more")


def test_output_kept_when_the_snippet_fails():
    res = go("print('before')\n1 / 0")
    assert res["output"] == "before\n" and res["error"]["type"] == "ZeroDivisionError"


def test_huge_result_text_is_capped():
    res = ok("'y' * 100_000", output_limit=1000)
    assert res["result"].startswith("y" * 1000) and "output truncated" in res["result"]


# ---- errors -----------------------------------------------------------------

def test_zero_division_points_at_snippet_line():
    err = failed("a = 1\nb = 0\nc = a / b\nprint(c)", "ZeroDivisionError")
    assert err["message"] == "division by zero" and err["line"] == 3
    tb = err["traceback"]
    assert tb.startswith("Traceback (most recent call last):\n")
    assert '  File "<snippet>", line 3, in <module>\n    c = a / b\n' in tb
    assert tb.endswith("ZeroDivisionError: division by zero\n")
    assert snippet_frames_only(tb) and "runner" not in tb


def test_error_in_snippet_function_keeps_both_frames():
    err = failed("def f(x):\n    return 1 / x\n\nf(0)", "ZeroDivisionError")
    assert err["line"] == 2
    assert re.findall(r'line (\d+), in (\S+)', err["traceback"]) == [("4", "<module>"),
                                                                    ("2", "f")]


def test_error_inside_pandas_shows_only_user_line():
    err = failed("df = pd.DataFrame({'a': [1]})\ndf['missing']", "KeyError")
    assert err["line"] == 2 and err["message"] == "'missing'"
    tb = err["traceback"]
    assert snippet_frames_only(tb) and tb.count('File "') == 1
    assert "pandas" not in tb and "direct cause" not in tb
    assert tb.endswith("KeyError: 'missing'\n")


def test_error_inside_helper_shows_only_user_line():
    def load_trades(days=30):
        raise ValueError(f"bad days: {days}")

    err = failed("x = 1\ndf = load_trades(days=-1)", "ValueError", {"load_trades": load_trades})
    assert err["line"] == 2 and err["message"] == "bad days: -1"
    assert snippet_frames_only(err["traceback"]) and "test_runner" not in err["traceback"]


def test_chained_exception_from_snippet_is_shown():
    err = failed("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                 "    raise ValueError('bad') from e", "ValueError")
    tb = err["traceback"]
    assert "ZeroDivisionError: division by zero" in tb and "direct cause" in tb
    assert tb.endswith("ValueError: bad\n") and err["line"] == 4


def test_syntax_error_line_and_column():
    res = go("x = 1\ny = = 2")
    err = res["error"]
    assert err["type"] == "SyntaxError" and (err["line"], err["column"]) == (2, 5)
    assert err["message"] == "line 2, column 5: invalid syntax"
    assert '  File "<snippet>", line 2\n    y = = 2\n' in err["traceback"]
    assert res["execution_time_ms"] == 0


def test_sys_exit_is_reported():
    err = failed("import sys\nprint('bye')\nsys.exit(3)", "SystemExit")
    assert err["code"] == 3 and err["line"] == 3


@pytest.mark.parametrize("code, type_, message", [
    ("raise KeyboardInterrupt", "KeyboardInterrupt", ""),
    ("raise MemoryError('too big')", "MemoryError", "too big"),
    ("raise GeneratorExit", "GeneratorExit", ""),
])
def test_base_exceptions_are_caught(code, type_, message):
    assert failed(code, type_)["message"] == message


def test_failing_repr_is_an_error():
    err = failed("class A:\n    def __repr__(self):\n        raise RuntimeError('boom')\nA()",
                 "RuntimeError")
    assert err["message"] == "cannot display the result: boom" and err["line"] == 3


def test_custom_filename_and_linecache_restored():
    err = failed("\n\nundefined_name", "NameError", filename="<job-7>")
    assert err["line"] == 3 and snippet_frames_only(err["traceback"], "<job-7>")
    assert "<job-7>" not in linecache.cache


# ---- tables -----------------------------------------------------------------

def test_groupby_sum_on_helper_data(trades):
    res = ok("df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum()",
             {"load_trades": lambda days=30: trades})
    assert res["result"] == ("exchange\n"
                             "binance          3.500\n"
                             "kraken           3.000\n"
                             "okx        1234567.891\n"
                             "Name: amount, dtype: float64")
    value = res["value"]
    assert value["type"] == "series" and value["name"] == "amount"
    assert value["index"] == ["binance", "kraken", "okx"]
    assert value["data"] == [3.5, 3.0, 1234567.891]
    assert (value["rows"], value["truncated"]) == (3, False)
    assert res["artifacts"] == []


def test_dataframe_aggregation_is_aligned(trades):
    res = ok("load_trades().groupby('exchange').agg(volume=('amount', 'sum'),"
             " trades=('amount', 'size'), price=('price', 'mean'))",
             {"load_trades": lambda days=30: trades})
    lines = res["result"].split("\n")
    assert lines[0].split() == ["volume", "trades", "price"] and lines[1].strip() == "exchange"
    rows = lines[2:]
    assert [r.split() for r in rows] == [["binance", "3.500", "2", "0.0000123"],
                                         ["kraken", "3.000", "2", "1.5000000"],
                                         ["okx", "1234567.891", "1", "65000.5000000"]]
    assert len({len(r) for r in [lines[0], *rows]}) == 1  # right edges line up
    assert res["value"]["dtypes"] == {"volume": "float64", "trades": "int64",
                                      "price": "float64"}


def test_long_dataframe_head_tail_value_and_csv():
    code = ("pd.DataFrame({'n': np.arange(100), 'half': np.arange(100) / 2,"
            " 'ts': pd.date_range('2024-01-01', periods=100, freq='h', tz='UTC')})")
    res = ok(code)
    lines = res["result"].split("\n")
    assert lines[0].split() == ["n", "half", "ts"]
    assert [ln.split()[0] for ln in lines[1:11]] == [str(i) for i in range(10)]
    assert lines[11] == "... 80 rows omitted ..."
    assert [ln.split()[0] for ln in lines[12:22]] == [str(i) for i in range(90, 100)]
    assert lines[22:] == ["", "[100 rows x 3 columns]"]
    value = res["value"]
    assert value["type"] == "dataframe" and value["columns"] == ["n", "half", "ts"]
    assert (value["rows"], value["truncated"], len(value["data"])) == (100, False, 100)
    assert value["data"][1] == [1, 0.5, "2024-01-01T01:00:00.000000Z"]
    [csv] = res["artifacts"]
    assert (csv["kind"], csv["name"], csv["mime"], csv["truncated"]) == (
        "csv", "table-1.csv", "text/csv", False)
    data = base64.b64decode(csv["data_b64"])
    assert csv["size"] == len(data)
    back = pd.read_csv(io.BytesIO(data))
    assert list(back.columns) == ["n", "half", "ts"] and len(back) == 100
    assert back["n"].tolist() == list(range(100)) and back["half"].iloc[99] == 49.5


def test_csv_cut_at_row_boundary():
    res = ok("result = pd.DataFrame({'n': range(1000), 's': ['text,with \"quotes\"'] * 1000})",
             csv_limit=2000)
    [csv] = res["artifacts"]
    data = base64.b64decode(csv["data_b64"])
    assert csv["truncated"] is True and len(data) <= 2000 and data.endswith(b"\n")
    back = pd.read_csv(io.BytesIO(data))
    assert len(back) == csv["rows"] and 0 < len(back) < 1000
    assert back["n"].tolist() == list(range(len(back)))


def test_long_series_and_value_truncation():
    res = ok(f"pd.Series(np.arange({VALUE_ROWS + 500}) * 1.5, name='x')")
    assert "... 1480 rows omitted ..." in res["result"]
    assert res["result"].endswith(f"Name: x, Length: {VALUE_ROWS + 500}, dtype: float64")
    value = res["value"]
    assert (value["rows"], value["truncated"], len(value["data"])) == (
        VALUE_ROWS + 500, True, VALUE_ROWS)
    back = pd.read_csv(io.BytesIO(base64.b64decode(res["artifacts"][0]["data_b64"])))
    assert len(back) == VALUE_ROWS + 500


def test_floats_not_in_scientific_notation():
    res = ok("pd.DataFrame({'volume': [12345678.5, 0.25], 'fee': [0.00001234, 0.5]})")
    assert res["result"].split("\n")[1:] == ["0  12345678.50  0.00001234",
                                             "1         0.25  0.50000000"]


def test_timestamps_and_nan_in_value_are_json_safe(trades):
    res = ok("load_trades()", {"load_trades": lambda: trades})
    value = res["value"]
    assert value["data"][0][0] == "2024-03-01T00:00:00.000000Z"
    assert value["data"][2][3] is None  # NaN price
    assert value["dtypes"]["timestamp"] == "datetime64[us, UTC]"


# ---- other values -----------------------------------------------------------

def test_dict_result_is_json_value():
    res = ok("result = {'n': np.int64(3), 'xs': [1.5, float('nan'), np.float32(0.5)],"
             " 'when': pd.Timestamp('2024-01-01', tz='UTC'), 'ok': np.bool_(True), 4: None}")
    assert res["value"] == {"type": "json", "value": {
        "n": 3, "xs": [1.5, None, 0.5], "when": "2024-01-01T00:00:00+00:00", "ok": True,
        "4": None}}
    assert res["result"].startswith("{'n': np.int64(3)")


def test_unconvertible_containers_fall_back_to_text():
    assert ok("[object()]")["value"] == {"type": "text"}
    assert ok("list(range(100_000))")["value"] == {"type": "text"}
    assert ok("np.arange(3)")["value"] == {"type": "json", "value": [0, 1, 2]}


# ---- figures ----------------------------------------------------------------

def test_plot_gives_png_artifact_and_closes_figures():
    res = ok("plt.plot([1, 2, 3], [3, 1, 2])\nplt.title('x')")
    [png] = res["artifacts"]
    assert (png["kind"], png["name"], png["mime"]) == ("png", "figure-1.png", "image/png")
    data = base64.b64decode(png["data_b64"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and png["size"] == len(data)
    assert plt.get_fignums() == []


def _irregular_prices():
    times = pd.to_datetime(["2026-10-01 09:13", "2026-10-04 17:02", "2026-10-19 03:40",
                            "2026-10-31 22:10"], utc=True)
    return pd.Series([0.08, 0.09, 0.085, 0.1], index=times)


@pytest.mark.parametrize("draw", [
    lambda s: s.plot(),                          # pandas' own date formatter
    lambda s: plt.plot(s.index, s.to_numpy()),   # matplotlib's
])
def test_date_axes_get_the_concise_formatter_upright(draw):
    import matplotlib.dates as mdates
    from tradebox.runner import _concise_dates
    draw(_irregular_prices())
    fig = plt.gcf()
    fig.autofmt_xdate()  # as pandas does: slanted
    _concise_dates(fig)
    ax = fig.axes[0]
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(t.get_rotation() == 0 for t in labels)
    assert not any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t.get_text()) for t in labels)
    plt.close("all")


def test_a_date_formatter_the_code_chose_is_kept():
    import matplotlib.dates as mdates
    from tradebox.runner import _concise_dates
    ax = _irregular_prices().plot()
    mine = mdates.DateFormatter("%d %b")
    ax.xaxis.set_major_formatter(mine)
    _concise_dates(ax.figure)
    assert ax.xaxis.get_major_formatter() is mine
    plt.close("all")


def test_plot_object_as_last_expression_is_not_the_result():
    res = ok("pd.Series([1, 3, 2]).plot()")
    assert res["result"] is None and len(res["artifacts"]) == 1


def test_two_figures_and_no_figures_after_failure():
    assert [a["name"] for a in ok("plt.figure()\nplt.plot([1])\nplt.figure()\nplt.plot([2])")
            ["artifacts"]] == ["figure-1.png", "figure-2.png"]
    res = go("plt.plot([1])\n1 / 0")
    assert res["artifacts"] == [] and plt.get_fignums() == []


# ---- caps, big numbers, surrogates -------------------------------------------

def test_caps_default_to_the_supervisors():
    assert CAPS == {"result_bytes": 32 << 20, "value_nodes": 200_000, "value_depth": 40,
                    "error_bytes": 64 << 10, "artifacts": 11, "png_bytes": 4 << 20,
                    "csv_bytes": 8 << 20}


def test_wide_table_value_is_limited_to_its_cell_budget():
    res = ok("pd.DataFrame(np.arange(1000 * 500).reshape(1000, 500))")
    value = res["value"]
    assert value["type"] == "dataframe" and value["truncated"] is True
    assert len(value["data"]) == 200 and len(value["data"][0]) == 500
    assert value["rows"] == 1000 and len(value["columns"]) == 500
    assert ok("pd.DataFrame(np.zeros((2, 10_001)))")["value"] == {"type": "text"}


def test_deep_or_large_json_values_become_text():
    assert ok("x = 1\nfor _ in range(34):\n    x = [x]\nx")["value"]["type"] == "json"
    assert ok("x = 1\nfor _ in range(36):\n    x = [x]\nx")["value"] == {"type": "text"}
    assert ok("{i: i for i in range(20_000)}")["value"] == {"type": "text"}
    assert ok("['x' * 1000] * 2000", output_limit=1 << 20)["value"] == {"type": "text"}
    assert ok("'y' * 2000", output_limit=1000)["value"] == {"type": "text"}


def test_integers_of_any_size():
    res = ok("result = 10 ** 400")
    assert res["result"] == "1" + "0" * 400 and res["value"] == {"type": "text"}
    assert ok("-(2 ** 63)")["value"] == {"type": "scalar", "value": -(1 << 63)}
    assert ok("2 ** 63")["value"] == {"type": "text"}
    assert ok("np.uint64(2 ** 64 - 1)")["value"] == {"type": "text"}
    res = ok("[1, 10 ** 5000]")
    assert res["value"] == {"type": "text"} and res["result"].endswith("0" * 100 + "]")
    res = ok("10 ** 200_000")
    assert res["result"] == "<an integer of about 200,001 digits>"
    assert ok("pd.Series([10 ** 30, 2 ** 64 - 1, 5], dtype=object)")["value"]["data"] == [
        "1" + "0" * 30, str(2 ** 64 - 1), 5]
    assert ok("import sys\nsys.get_int_max_str_digits()")["result"] == "4300"


def test_lone_surrogates_come_back_as_escapes():
    res = ok("result = 'a\\ud800b'")
    assert res["result"] == "a\\ud800b"
    frame = assert_strict_frame(encode(res))
    assert frame["value"] == {"type": "scalar", "value": "a\\ud800b"}
    frame = assert_strict_frame(encode(ok("{'\\udfff': 1}")))
    assert frame["value"] == {"type": "json", "value": {"\\udfff": 1}}
    assert ok("print('\\ud800')")["output"] == "\\ud800\n"
    res = go("raise ValueError('bad \\ud800')")
    assert_strict_frame(encode(res))["error"]["message"] == "bad \\ud800"
    assert json.loads(encode(res))["error"]["message"] == "bad \\ud800"


def test_error_texts_are_cut_to_their_cap():
    err = failed("raise ValueError('m' * 100_000)", "ValueError", caps={"error_bytes": 1000})
    assert err["message"] == "m" * 1000 + (
        "\n... message truncated: 96.7 KiB more not shown (limit 1000 bytes)")
    assert err["traceback"].endswith("(limit 1000 bytes)")
    assert "traceback truncated" in err["traceback"]
    err = failed("class " + "E" * 300 + "(Exception): pass\nraise " + "E" * 300, "E" * 100)


def test_encode_refuses_an_answer_over_the_cap():
    res = ok("print('kept')\nresult = 'z' * 5000")
    frame = json.loads(encode(res, {"result_bytes": 3000}))
    assert frame == {"success": False, "result": None, "value": None, "output": "kept\n",
                     "execution_time_ms": res["execution_time_ms"], "artifacts": [],
                     "error": {"type": "ResultTooLarge",
                               "message": "the result is 9.9 KiB, over the 2.9 KiB limit"}}
    frame = json.loads(encode({**res, "output": "o" * 4000}, {"result_bytes": 3000}))
    assert frame["output"] == "" and frame["error"]["type"] == "ResultTooLarge"


def test_files_that_do_not_fit_are_left_out_with_a_note():
    plot = "plt.figure()\nplt.plot([1, 2])\n"
    res = ok(plot * 12)
    assert [a["name"] for a in res["artifacts"]] == [f"figure-{i}.png" for i in range(1, 12)]
    assert res["output"] == "1 more figures not shown (limit 11 files)"
    res = ok(plot * 2 + "result = pd.DataFrame({'n': range(100)})", caps={"artifacts": 2})
    assert [a["name"] for a in res["artifacts"]] == ["table-1.csv", "figure-1.png"]
    res = ok(plot * 2, caps={"png_bytes": 100})
    assert res["artifacts"] == [] and res["output"] == (
        "2 figures not shown: over the 100 bytes limit of an image")
    res = ok("print('x' * 50)\n" + plot * 3, caps={"result_bytes": (64 << 10) + 50_000},
             output_limit=10)
    assert 0 < len(res["artifacts"]) < 3
    assert res["output"].endswith(
        "\n... output truncated: 41 bytes more not shown (limit 10 bytes)\n"
        f"{3 - len(res['artifacts'])} file{'s' * (len(res['artifacts']) == 1)} left out: "
        "the answer would be over its 112.8 KiB limit")
    res = ok("pd.DataFrame({'n': range(10_000)})", caps={"result_bytes": (64 << 10) + 1000})
    assert res["artifacts"] == [] and res["value"] == {"type": "text"}
    assert res["output"].startswith("1 file left out")


def test_csv_has_no_control_characters():
    res = ok("pd.DataFrame({'s': pd.Series(['a\\x1b[2Jb', 'c\\x00', 'tab\\there', 'x\\ud800'],"
             " dtype=object)})", table_rows=2)
    data = base64.b64decode(res["artifacts"][0]["data_b64"]).decode("utf-8")
    assert data == "s\na\\x1b[2Jb\nc\\x00\ntab\there\nx\\ud800\n"


def test_output_mirror_sees_what_is_kept_as_it_comes():
    seen = []
    res = ok("print('a')\nprint('\\ud800' + 'b' * 20)", output_limit=10,
             output_mirror=lambda data, total: seen.append((bytes(data), total)))
    assert seen == [(b"a", 1), (b"\n", 2), (b"\\ud800bb", 28), (b"", 29)]
    assert res["output"].startswith("a\n\\ud800bb\n... output truncated: 19 bytes more")


def test_a_deep_traceback_reads_as_pythons_own():
    """Identical frames beyond three are counted, not formatted (a runaway
    recursion has a million), and the text is what Python itself prints."""
    import sys
    import traceback

    code = ("import sys\nsys.setrecursionlimit(30_000)\n"
            "def f(n):\n    if n > 20_000:\n        raise ValueError('deep')\n    return f(n + 1)\n"
            "f(0)")
    limit = sys.getrecursionlimit()
    try:
        err = failed(code, "ValueError")
        fn = "<reference>"
        linecache.cache[fn] = (len(code), None, code.splitlines(True), fn)
        try:
            exec(compile(code, fn, "exec"), {"__name__": "__main__"})
        except ValueError as e:
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == fn]
            reference = ("Traceback (most recent call last):\n"
                         + "".join(traceback.StackSummary.from_list(frames).format())
                         + "ValueError: deep\n")
    finally:
        sys.setrecursionlimit(limit)
        linecache.cache.pop("<reference>", None)
    assert "[Previous line repeated 19998 more times]" in err["traceback"]
    assert err["traceback"] == reference.replace("<reference>", "<snippet>")
