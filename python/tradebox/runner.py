"""Run one user snippet inside an already-confined sandbox child.

`run(code, helpers)` executes the snippet in fresh globals holding the
pre-imports (`pd`, `np`, `datetime`, `timedelta`, `math`, `statistics`, `plt`)
and the caller's helpers (`load_trades`, ..., `params`), and returns a
JSON-serialisable dict: success, result (text form), value (structured form),
output (stdout+stderr, capped), error (type, message, line, a traceback with
only the snippet's frames), execution_time_ms, artifacts (a PNG per matplotlib
figure, a CSV of a table too long to show). The result is the global `result`
if the snippet sets one, else the value of its last expression (as in a
notebook). `run` never raises; forking, confinement and pipes are the
caller's job. `encode(result, caps)` gives the answer frame's bytes.

The supervisor enforces `caps` (crates/sandbox/src/result.rs, ResultCaps) on
every answer and refuses one that breaks them; the runner keeps a legitimate
result well within them: texts cut with a note, structured values that are
too large given as text, files that do not fit left out with a line in the
output saying so.
"""

import ast
import base64
import builtins
import contextlib
import datetime as dt
import io
import json
import linecache
import math
import numbers
import re
import statistics
import sys
import time
import traceback
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.artist  # noqa: E402
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["run", "encode"]

VALUE_ROWS = 1000      # rows in the structured form of a table
VALUE_CELLS = 100_000  # cells in the structured form of a table (fewer rows when wide)
VALUE_COLS = 10_000    # wider tables have only a text form
JSON_ITEMS = 10_000    # items of a dict/list result in its structured form
INT_DIGITS = 100_000   # longest integer shown in full (str() of an int is quadratic)
MAX_COLS = 20          # columns in the text form of a table (half first, half last)
CAPS = {  # the supervisor's defaults (ResultCaps::for_output), used when none are given;
    # output_bytes is output_limit, and result_bytes grows by twice that
    "result_bytes": 32 << 20, "value_nodes": 200_000, "value_depth": 40,
    "error_bytes": 64 << 10, "artifacts": 11, "png_bytes": 4 << 20, "csv_bytes": 8 << 20}
_NO = object()         # "not convertible to JSON"
_I64 = range(-1 << 63, 1 << 63)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # all but \t \n \r
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_DISPLAY = ("display.max_columns", MAX_COLS, "display.width", 200,
            "display.max_colwidth", 50, "display.max_rows", 60)


def run(code: str, helpers: dict, *, output_limit: int = 1 << 20, table_rows: int = 20,
        csv_limit: int | None = None, filename: str = "<snippet>",
        caps: dict | None = None, output_mirror=None) -> dict:
    """Execute `code`; return the result dict described in the module docstring.
    `output_mirror(data, total)`, if given, is called with the UTF-8 bytes of
    each piece of output kept and the bytes printed so far, as they come."""
    caps = {**CAPS, "output_bytes": output_limit,
            "result_bytes": CAPS["result_bytes"] + 2 * output_limit, **(caps or {})}
    if csv_limit is not None:
        caps["csv_bytes"] = min(csv_limit, caps["csv_bytes"])
    res = {"success": False, "result": None, "value": None, "output": "", "error": None,
           "execution_time_ms": 0, "artifacts": []}
    out = _Capped(caps["output_bytes"], mirror=output_mirror)
    saved = linecache.cache.get(filename)
    digits = sys.get_int_max_str_digits()
    try:  # linecache lets tracebacks show the snippet's source lines
        lines = io.StringIO(code, newline=None).readlines()
        linecache.cache[filename] = (len(code), None, lines, filename)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            _execute(code, helpers, filename, res, caps, max(table_rows, 2), out)
    except BaseException as e:  # e.g. an interrupt arriving outside the snippet
        res["error"] = res["error"] or _error(e, filename)
    finally:
        sys.set_int_max_str_digits(digits)
        with contextlib.suppress(BaseException):
            plt.close("all")
        if saved is None:
            linecache.cache.pop(filename, None)
        else:
            linecache.cache[filename] = saved
    if res["error"]:
        err = res["error"]
        err["type"] = err["type"][:100]
        for key in ("message", "traceback"):
            err[key] = _cut(err[key], caps["error_bytes"], key)
        res.update(result=None, value=None, artifacts=[])
    _fit(res, caps, out)
    res["output"] = out.getvalue()
    res["success"] = res["error"] is None
    return res


def encode(res: dict, caps: dict | None = None) -> bytes:
    """The result as the bytes of one answer frame: UTF-8 JSON, lone surrogates
    shown as backslash escapes; a ResultTooLarge failure when over
    caps["result_bytes"]."""
    limit = {**CAPS, **(caps or {})}["result_bytes"]
    try:
        data = _dumps(res)
    except (TypeError, ValueError) as e:
        return _dumps(_failure("InvalidResult", f"the result could not be encoded: {e}", res))
    if len(data) <= limit:
        return data
    message = f"the result is {_size(len(data))}, over the {_size(limit)} limit"
    data = _dumps(_failure("ResultTooLarge", message, res))
    return data if len(data) <= limit else _dumps(_failure("ResultTooLarge", message))


def _dumps(obj) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str)
    try:
        return text.encode()
    except UnicodeEncodeError:  # raw surrogates only occur inside JSON strings
        return _SURROGATE.sub(lambda m: f"\\\\u{ord(m[0]):04x}", text).encode()


def _failure(kind, message, res=None) -> dict:
    """A failure in the shape of the zygote's own, keeping the output."""
    return {"success": False, "result": None, "value": None,
            "output": res["output"] if res else "",
            "execution_time_ms": res["execution_time_ms"] if res else 0, "artifacts": [],
            "error": {"type": kind, "message": message}}


def _fit(res, caps, out):
    """Give the value as text, then leave out files, until the answer fits."""
    budget = caps["result_bytes"] - (64 << 10)  # room for the notes and the frame's keys
    try:
        size = len(_dumps({**res, "artifacts": [], "output": out.getvalue()}))
    except (TypeError, ValueError):
        return  # encode() reports it
    if size > budget and res["value"] is not None:
        size -= len(_dumps(res["value"])) - len(_dumps({"type": "text"}))
        res["value"] = {"type": "text"}
    kept, left = [], 0
    for a in res["artifacts"]:
        cost = len(_dumps(a))
        if size + cost <= budget:
            kept.append(a)
            size += cost
        else:
            left += 1
    res["artifacts"] = kept
    if left:
        out.note(f"{left} file{'s' * (left > 1)} left out: the answer would be over its "
                 f"{_size(caps['result_bytes'])} limit")


def _execute(code, helpers, filename, res, caps, table_rows, out):
    try:  # notebook style: the last statement, if an expression, is evaluated
        tree, last = ast.parse(code, filename), None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval",
                           dont_inherit=True)
        body = compile(tree, filename, "exec", dont_inherit=True)
    except BaseException as e:  # SyntaxError; ValueError, MemoryError, RecursionError
        res["error"] = _error(e, filename)
        return
    env = {"__name__": "__main__", "__builtins__": builtins, "pd": pd, "np": np,
           "datetime": dt.datetime, "timedelta": dt.timedelta, "math": math,
           "statistics": statistics, "plt": plt, **helpers}
    start = time.perf_counter()
    try:
        exec(body, env)
        value = eval(last, env) if last is not None else None
    except BaseException as e:
        res["error"] = _error(e, filename)
        return
    finally:
        res["execution_time_ms"] = round((time.perf_counter() - start) * 1000)
    if "result" in env:
        value = env["result"]
    elif _is_plot(value):  # `df.plot()` as last line: the figure is the result
        value = None
    try:
        sys.set_int_max_str_digits(INT_DIGITS)  # restored by run()
        with pd.option_context(*_DISPLAY):
            res["result"], res["value"], res["artifacts"] = _render(value, caps, table_rows)
        res["artifacts"] += _figures(caps, caps["artifacts"] - len(res["artifacts"]), out)
    except Exception as e:  # e.g. a user __repr__ or a figure failed
        res.update(result=None, value=None, artifacts=[], error=_error(e, filename))
        res["error"]["message"] = f"cannot display the result: {res['error']['message']}"


class _Capped(io.TextIOBase):
    """Text sink keeping the first `limit` bytes (UTF-8, lone surrogates as
    backslash escapes); the rest is only counted. Notes follow the kept text."""

    encoding = "utf-8"

    def __init__(self, limit: int, what: str = "output", mirror=None):
        self.limit, self.kept, self.total, self.cut, self.parts = max(limit, 0), 0, 0, False, []
        self.what, self.notes, self.mirror = what, [], mirror

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s) if s.isascii() else sum(  # encoded in slices: no big copy
            len(s[i:i + 65536].encode("utf-8", "backslashreplace"))
            for i in range(0, len(s), 65536))
        self.total += n
        kept = ""
        if not self.cut:
            room, kept = self.limit - self.kept, s
            if n > room:  # keep what fits, cut at a character boundary
                self.cut = True
                kept = s[:room].encode("utf-8", "backslashreplace")[:room].decode(
                    "utf-8", "ignore")
                n = len(kept.encode())
            self.parts.append(kept)
            self.kept += n
        if self.mirror is not None:
            self.mirror(kept.encode("utf-8", "backslashreplace"), self.total)
        return len(s)

    def note(self, line: str):
        """A line of tradebox's own, shown after the kept text (not capped)."""
        self.notes.append(line)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if not text.isascii():  # no lone surrogates in the result
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if self.cut:
            text += ("\n" if text and not text.endswith("\n") else "") + (
                f"... {self.what} truncated: {_size(self.total - self.kept)} more not shown "
                f"(limit {_size(self.limit)})")
        for line in self.notes:
            text += ("\n" if text and not text.endswith("\n") else "") + line
        return text


def _cut(text, limit, what):
    """`text` cut to `limit` bytes with a note, as the supervisor cuts it."""
    if text is None:
        return None
    capped = _Capped(limit, what)
    capped.write(text)
    return capped.getvalue()


def _size(n: float) -> str:
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"


def _error(exc: BaseException, filename: str) -> dict:
    """type, message, line and traceback of an exception, with only snippet frames."""
    err = {"type": type(exc).__name__, "message": _safe_str(exc), "line": None,
           "traceback": ""}
    with contextlib.suppress(Exception):
        frames, _ = _user_frames(exc, filename)
        err["line"] = frames[-1].lineno if frames else None
        if isinstance(exc, SystemExit):
            code = exc.code
            err["code"] = code if code is None or isinstance(code, (int, str)) else repr(code)
        if isinstance(exc, SyntaxError) and exc.filename == filename:  # the snippet's own
            err.update(line=exc.lineno, column=exc.offset, message=exc.msg)
            if exc.lineno:
                err["message"] = f"line {exc.lineno}, column {exc.offset}: {exc.msg}"
        err["traceback"] = _format(exc, filename, set())
    return err


def _user_frames(exc, filename):
    """The snippet's frames of a traceback, and after each how many identical
    frames followed it that are only counted (as Python prints them: three,
    then "[Previous line repeated N more times]"). A runaway recursion has a
    million frames: only the kept ones are looked up and formatted."""
    kept, extra, last, run = [], [], None, 0
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            key = (code, tb.tb_lineno)
            run = run + 1 if key == last else 1
            last = key
            if run <= 3:
                kept.append(tb)
                extra.append(0)
            else:
                extra[-1] += 1
        tb = tb.tb_next
    chain = None  # a short traceback of the kept frames (keeps their positions)
    for tb in reversed(kept):
        chain = types.TracebackType(chain, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    return traceback.extract_tb(chain), extra


def _format(exc, filename, seen) -> str:
    """Python's traceback text minus foreign frames. A chained exception with
    no snippet frame (e.g. pandas' internal KeyError behind the one the user
    sees) is left out."""
    seen.add(id(exc))
    text = ""
    context = None if exc.__suppress_context__ else exc.__context__
    for chained, joint in ((exc.__cause__, _CAUSE), (context, _CONTEXT)):
        if chained is not None:
            if id(chained) not in seen and _user_frames(chained, filename)[0]:
                text = _format(chained, filename, seen) + joint
            break
    frames, extra = _user_frames(exc, filename)
    if frames:
        text += "Traceback (most recent call last):\n"
        for frame, more in zip(frames, extra):
            text += "".join(traceback.format_list([frame]))
            if more:
                text += f"  [Previous line repeated {more} more time{'s' * (more > 1)}]\n"
    return text + "".join(traceback.format_exception_only(type(exc), exc))


def _safe_str(exc) -> str:
    try:
        return str(exc)
    except BaseException:
        return f"<{type(exc).__name__}: str() failed>"


def _render(value, caps, table_rows):
    """(text, structured value, artifacts) of a result."""
    if value is None:
        return None, None, []
    if isinstance(value, (pd.DataFrame, pd.Series)):
        artifacts = [_csv(value, caps["csv_bytes"])] if len(value) > table_rows else []
        text, structured = _table_text(value, table_rows), _table_value
    else:
        artifacts, structured = [], _plain_value
        if isinstance(value, int) and not isinstance(value, bool):
            text = _int_text(value)
        elif isinstance(value, (numbers.Number, np.generic, dt.date, dt.time, dt.timedelta)):
            text = str(value)
        else:
            text = value if isinstance(value, str) else repr(value)
    capped = _Capped(caps["output_bytes"])  # a huge str, repr or table is cut like output
    capped.write(text)
    try:
        return capped.getvalue(), structured(value, caps), artifacts
    except Exception:
        return capped.getvalue(), {"type": "text"}, artifacts


def _int_text(n: int) -> str:
    """The digits of `n`, or a description when there are too many to show."""
    if n.bit_length() <= INT_DIGITS * 3:  # under about 0.9 * INT_DIGITS digits
        return str(n)
    return f"<an integer of about {int(n.bit_length() * math.log10(2)) + 1:,} digits>"


def _table_text(obj, table_rows):
    """pandas' aligned text; over `table_rows` rows, only the head and tail."""
    n, ncols = len(obj), (obj.shape[1] if obj.ndim == 2 else 1)
    if n == 0:
        return repr(obj)
    head, cut = table_rows // 2, n > table_rows
    shown = obj.iloc[np.r_[0:head, n - (table_rows - head):n]] if cut else obj.copy(deep=False)
    if obj.ndim == 1:
        texts = _float_texts(shown)
        if texts is not None:
            shown = pd.Series(texts, index=shown.index, dtype=object)
        text = shown.to_string(name=False, dtype=False, length=False)
    else:
        half = MAX_COLS // 2
        cols = range(ncols) if ncols <= MAX_COLS else [*range(half), *range(ncols - half, ncols)]
        for i in cols:
            texts = _float_texts(shown.iloc[:, i])
            if texts is not None:
                shown.isetitem(i, pd.Series(texts, index=shown.index, dtype=object))
        text = shown.to_string(max_cols=MAX_COLS, max_colwidth=50)
    if cut:
        lines = text.split("\n")
        header = len(lines) - len(shown)
        if header >= 0:
            lines.insert(header + head, f"... {n - len(shown)} rows omitted ...")
        text = "\n".join(lines)
    if obj.ndim == 1:
        footer = ([f"Name: {obj.name}"] if obj.name is not None else []) + (
            [f"Length: {n}"] if cut else [])
        return text + "\n" + ", ".join([*footer, f"dtype: {obj.dtype}"])
    return text + (f"\n\n[{n} rows x {ncols} columns]" if cut or ncols > MAX_COLS else "")


def _float_texts(col):
    """Fixed-point texts for a float column: at least 6 decimals (more for tiny
    values), minus the trailing zeros all values share; None when the column
    is not float or needs scientific notation (then pandas formats it)."""
    if col.dtype.kind != "f":
        return None
    v = col.to_numpy(dtype=float, na_value=np.nan)
    a = np.abs(v[np.isfinite(v) & (v != 0)])
    decimals = max(6, 5 - math.floor(math.log10(a.min()))) if a.size else 6
    if decimals > 12 or (a.size and a.max() >= 1e15):
        return None
    texts = [f"{x:.{decimals}f}" if math.isfinite(x) else "" for x in v]
    trim = min([decimals - 1] + [len(t) - len(t.rstrip("0")) for t in texts if t])
    return [(t[:len(t) - trim] if t else "NaN" if x != x else str(x)) for t, x in zip(texts, v)]


def _table_value(obj, caps):
    ncols = obj.shape[1] if obj.ndim == 2 else 1
    if ncols > VALUE_COLS:
        return {"type": "text"}
    rows = max(1, min(VALUE_ROWS, VALUE_CELLS // max(ncols, 1)))
    doc = json.loads(
        obj.iloc[:rows].to_json(orient="split", date_format="iso", date_unit="us",
                                double_precision=15, default_handler=str),
        parse_int=_parse_int, parse_constant=lambda _: None)
    if obj.ndim == 2:
        value = {"type": "dataframe", "columns": doc["columns"], "index": doc["index"],
                 "data": doc["data"], "dtypes": {str(c): str(t) for c, t in obj.dtypes.items()}}
    else:
        value = {"type": "series", "name": doc.get("name"), "index": doc["index"],
                 "data": doc["data"], "dtype": str(obj.dtype)}
    return {**value, "rows": len(obj), "truncated": len(obj) > rows}


def _parse_int(text):
    """A JSON integer as a number only within the signed 64-bit range."""
    n = int(text)
    return n if n in _I64 else text


def _plain_value(value, caps):
    scalar = _scalar(value)
    if scalar is not _NO:
        if isinstance(scalar, str) and len(scalar) > caps["output_bytes"]:
            return {"type": "text"}
        return {"type": "scalar", "value": scalar}
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        budget = {"items": JSON_ITEMS, "chars": caps["output_bytes"],
                  "depth": caps["value_depth"] - 5}
        return {"type": "json", "value": _json(value, budget, 1)}
    return {"type": "text"}


def _scalar(x):
    """JSON-safe form of a scalar (NaN/NaT/NA as None), or _NO."""
    if isinstance(x, (np.datetime64, np.timedelta64)):
        x = pd.Timestamp(x) if isinstance(x, np.datetime64) else pd.Timedelta(x)
    if x is None or x is pd.NaT or x is pd.NA:
        return None
    if isinstance(x, (bool, np.bool_, str)):
        return x if isinstance(x, str) else bool(x)
    if isinstance(x, numbers.Integral):
        return int(x) if int(x) in _I64 else _NO
    if isinstance(x, numbers.Real):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (dt.date, dt.time)):
        return x.isoformat()
    return str(pd.Timedelta(x)) if isinstance(x, dt.timedelta) else _NO


def _json(x, budget, depth):
    """JSON-safe copy of nested dicts/lists/numeric arrays of scalars; raises
    ValueError if something is not convertible or over the budget (items,
    characters of strings, depth)."""
    budget["items"] -= 1
    if budget["items"] < 0 or depth > budget["depth"]:
        raise ValueError("too large")
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf" and x.size <= budget["items"]:
        x = x.tolist()
    if isinstance(x, dict):
        return {_counted(str(k), budget): _json(v, budget, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v, budget, depth + 1) for v in x]
    scalar = _scalar(x)
    if scalar is _NO:
        raise ValueError(f"not convertible: {type(x).__name__}")
    return _counted(scalar, budget) if isinstance(scalar, str) else scalar


def _counted(text, budget):
    """`text`, its characters taken from the budget (ValueError past it)."""
    budget["chars"] -= len(text)
    if budget["chars"] < 0:
        raise ValueError("too large")
    return text


def _is_plot(value) -> bool:
    items = value if isinstance(value, (list, tuple)) and value else [value]
    return all(isinstance(v, matplotlib.artist.Artist) for v in items)


def _artifact(kind, name, mime, data: bytes, **extra) -> dict:
    return {"kind": kind, "name": name, "mime": mime,
            "data_b64": base64.b64encode(data).decode("ascii"), "size": len(data), **extra}


def _csv(obj, limit):
    """The whole table as CSV, cut at a row boundary if over `limit` bytes;
    control characters and lone surrogates shown as backslash escapes."""
    frame = obj.to_frame() if obj.ndim == 1 else obj
    ix = frame.index  # a plain 0..n-1 index is left out
    index = not (isinstance(ix, pd.RangeIndex) and ix.start == 0 and ix.step == 1
                 and ix.name is None)
    parts = [_csv_bytes(frame.iloc[:0].to_csv(index=index))]
    size, start, step, truncated = len(parts[0]), 0, 10_000, len(parts[0]) > limit
    while start < len(frame) and not truncated:  # chunks of rows, halved to fit
        chunk = _csv_bytes(frame.iloc[start:start + step].to_csv(header=False, index=index))
        if size + len(chunk) <= limit:
            parts.append(chunk)
            size, start = size + len(chunk), min(start + step, len(frame))
        elif step > 1:
            step //= 2
        else:
            truncated = True
    data = b"".join(parts) if size <= limit else b""
    return _artifact("csv", "table-1.csv", "text/csv", data, rows=start, truncated=truncated)


def _csv_bytes(text: str) -> bytes:
    text = _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode(), text)
    return text.encode("utf-8", "backslashreplace")


def _figures(caps, room, out):
    """A PNG per open figure, up to `room` of them and `png_bytes` each (the
    rest counted in a note)."""
    nums, artifacts, too_big = plt.get_fignums(), [], 0
    for num in nums[:max(room, 0)]:
        buf = io.BytesIO()
        figure = plt.figure(num)
        _concise_dates(figure)
        figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        if buf.tell() > caps["png_bytes"]:
            too_big += 1
        else:
            name = f"figure-{len(artifacts) + 1}.png"
            artifacts.append(_artifact("png", name, "image/png", buf.getvalue()))
    if len(nums) > room:
        out.note(f"{len(nums) - max(room, 0)} more figures not shown (limit {caps['artifacts']} "
                 f"files)")
    if too_big:
        out.note(f"{too_big} figure{'s' * (too_big > 1)} not shown: over the "
                 f"{_size(caps['png_bytes'])} limit of an image")
    return artifacts


def _concise_dates(figure):
    """Date axes left with the automatic formatter (matplotlib's or pandas')
    get the concise one, upright: "Oct  05  09 ... 2026-Nov" rather than
    slanted full dates that overlap. A formatter the code chose is kept."""
    for ax in figure.axes:
        for axis, labels in ((ax.xaxis, ax.get_xticklabels), (ax.yaxis, ax.get_yticklabels)):
            locator = axis.get_major_locator()
            if (isinstance(axis.get_major_formatter(), mdates.AutoDateFormatter)
                    and isinstance(locator, mdates.AutoDateLocator)):
                axis.set_major_formatter(mdates.ConciseDateFormatter(locator))
                if axis is ax.xaxis:
                    for label in labels():
                        label.set_rotation(0)
                        label.set_horizontalalignment("center")
