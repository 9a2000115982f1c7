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
caller's job.
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
import statistics
import time
import traceback

import matplotlib

matplotlib.use("Agg")
import matplotlib.artist  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["run", "encode"]

VALUE_ROWS = 1000  # rows in the structured form of a table
MAX_COLS = 20      # columns in the text form of a table (half first, half last)
MAX_FIGURES = 10   # PNG artifacts per run
_NO = object()     # "not convertible to JSON"
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_DISPLAY = ("display.max_columns", MAX_COLS, "display.width", 200,
            "display.max_colwidth", 50, "display.max_rows", 60)


def run(code: str, helpers: dict, *, output_limit: int = 1 << 20, table_rows: int = 20,
        csv_limit: int = 8 << 20, filename: str = "<snippet>", caps: dict | None = None) -> dict:
    """Execute `code`; return the result dict described in the module docstring."""
    res = {"success": False, "result": None, "value": None, "output": "", "error": None,
           "execution_time_ms": 0, "artifacts": []}
    out = _Capped(output_limit)
    saved = linecache.cache.get(filename)
    try:  # linecache lets tracebacks show the snippet's source lines
        lines = io.StringIO(code, newline=None).readlines()
        linecache.cache[filename] = (len(code), None, lines, filename)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            _execute(code, helpers, filename, res, output_limit, max(table_rows, 2), csv_limit)
    except BaseException as e:  # e.g. an interrupt arriving outside the snippet
        res["error"] = res["error"] or _error(e, filename)
    finally:
        with contextlib.suppress(BaseException):
            plt.close("all")
        if saved is None:
            linecache.cache.pop(filename, None)
        else:
            linecache.cache[filename] = saved
    res["output"] = out.getvalue()
    res["success"] = res["error"] is None
    return res


def encode(res: dict, caps: dict | None = None) -> bytes:
    """The result as the bytes of one answer frame (UTF-8 JSON)."""
    return json.dumps(res, default=str).encode()


def _execute(code, helpers, filename, res, output_limit, table_rows, csv_limit):
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
        with pd.option_context(*_DISPLAY):
            res["result"], res["value"], res["artifacts"] = _render(
                value, output_limit, table_rows, csv_limit)
        res["artifacts"] += _figures()
    except Exception as e:  # e.g. a user __repr__ or a figure failed
        res.update(result=None, value=None, artifacts=[], error=_error(e, filename))
        res["error"]["message"] = f"cannot display the result: {res['error']['message']}"


class _Capped(io.TextIOBase):
    """Text sink keeping the first `limit` bytes (UTF-8); the rest is only counted."""

    encoding = "utf-8"

    def __init__(self, limit: int):
        self.limit, self.kept, self.total, self.cut, self.parts = max(limit, 0), 0, 0, False, []

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s) if s.isascii() else sum(  # encoded in slices: no big copy
            len(s[i:i + 65536].encode("utf-8", "replace")) for i in range(0, len(s), 65536))
        self.total += n
        if not self.cut:
            room, kept = self.limit - self.kept, s
            if n > room:  # keep what fits, cut at a character boundary
                self.cut = True
                kept = s[:room].encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                n = len(kept.encode())
            self.parts.append(kept)
            self.kept += n
        return len(s)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if not text.isascii():  # no lone surrogates in the result
            text = text.encode("utf-8", "replace").decode("utf-8")
        if self.cut:
            text += ("\n" if text and not text.endswith("\n") else "") + (
                f"... output truncated: {_size(self.total - self.kept)} more not shown "
                f"(limit {_size(self.limit)})")
        return text


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
        frames = _user_frames(exc, filename)
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
    return [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]


def _format(exc, filename, seen) -> str:
    """Python's traceback text minus foreign frames. A chained exception with
    no snippet frame (e.g. pandas' internal KeyError behind the one the user
    sees) is left out."""
    seen.add(id(exc))
    text = ""
    context = None if exc.__suppress_context__ else exc.__context__
    for chained, joint in ((exc.__cause__, _CAUSE), (context, _CONTEXT)):
        if chained is not None:
            if id(chained) not in seen and _user_frames(chained, filename):
                text = _format(chained, filename, seen) + joint
            break
    frames = _user_frames(exc, filename)
    if frames:
        text += "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    return text + "".join(traceback.format_exception_only(type(exc), exc))


def _safe_str(exc) -> str:
    try:
        return str(exc)
    except BaseException:
        return f"<{type(exc).__name__}: str() failed>"


def _render(value, output_limit, table_rows, csv_limit):
    """(text, structured value, artifacts) of a result."""
    if value is None:
        return None, None, []
    if isinstance(value, (pd.DataFrame, pd.Series)):
        artifacts = [_csv(value, csv_limit)] if len(value) > table_rows else []
        text, structured = _table_text(value, table_rows), _table_value
    else:
        artifacts, structured = [], _plain_value
        if isinstance(value, (numbers.Number, np.generic, dt.date, dt.time, dt.timedelta)):
            value_text = str(value)
        else:
            value_text = value if isinstance(value, str) else repr(value)
        capped = _Capped(output_limit)  # a huge str or repr is cut like output
        capped.write(value_text)
        text = capped.getvalue()
    try:
        return text, structured(value), artifacts
    except Exception:
        return text, {"type": "text"}, artifacts


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


def _table_value(obj):
    doc = json.loads(obj.iloc[:VALUE_ROWS].to_json(
        orient="split", date_format="iso", date_unit="us", double_precision=15,
        default_handler=str))
    if obj.ndim == 2:
        value = {"type": "dataframe", "columns": doc["columns"], "index": doc["index"],
                 "data": doc["data"], "dtypes": {str(c): str(t) for c, t in obj.dtypes.items()}}
    else:
        value = {"type": "series", "name": doc.get("name"), "index": doc["index"],
                 "data": doc["data"], "dtype": str(obj.dtype)}
    return {**value, "rows": len(obj), "truncated": len(obj) > VALUE_ROWS}


def _plain_value(value):
    scalar = _scalar(value)
    if scalar is not _NO:
        return {"type": "scalar", "value": scalar}
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        return {"type": "json", "value": _json(value, [10_000])}
    return {"type": "text"}


def _scalar(x):
    """JSON-safe form of a scalar (NaN/NaT/NA as None), or _NO."""
    if isinstance(x, (np.datetime64, np.timedelta64)):
        x = pd.Timestamp(x) if isinstance(x, np.datetime64) else pd.Timedelta(x)
    if x is None or x is pd.NaT or x is pd.NA:
        return None
    if isinstance(x, (bool, np.bool_, str)):
        return x if isinstance(x, str) else bool(x)
    if isinstance(x, numbers.Real):
        return int(x) if isinstance(x, numbers.Integral) else (
            float(x) if math.isfinite(x) else None)
    if isinstance(x, (dt.date, dt.time)):
        return x.isoformat()
    return str(pd.Timedelta(x)) if isinstance(x, dt.timedelta) else _NO


def _json(x, budget):
    """JSON-safe copy of nested dicts/lists/numeric arrays of scalars; raises
    ValueError if something is not convertible or there are over `budget` items."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("too large")
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf" and x.size <= budget[0]:
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _json(v, budget) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v, budget) for v in x]
    scalar = _scalar(x)
    if scalar is _NO:
        raise ValueError(f"not convertible: {type(x).__name__}")
    return scalar


def _is_plot(value) -> bool:
    items = value if isinstance(value, (list, tuple)) and value else [value]
    return all(isinstance(v, matplotlib.artist.Artist) for v in items)


def _artifact(kind, name, mime, data: bytes, **extra) -> dict:
    return {"kind": kind, "name": name, "mime": mime,
            "data_b64": base64.b64encode(data).decode("ascii"), "size": len(data), **extra}


def _csv(obj, limit):
    """The whole table as CSV, cut at a row boundary if over `limit` bytes."""
    frame = obj.to_frame() if obj.ndim == 1 else obj
    ix = frame.index  # a plain 0..n-1 index is left out
    index = not (isinstance(ix, pd.RangeIndex) and ix.start == 0 and ix.step == 1
                 and ix.name is None)
    parts = [frame.iloc[:0].to_csv(index=index).encode()]
    size, start, step, truncated = len(parts[0]), 0, 10_000, len(parts[0]) > limit
    while start < len(frame) and not truncated:  # chunks of rows, halved to fit
        chunk = frame.iloc[start:start + step].to_csv(header=False, index=index).encode()
        if size + len(chunk) <= limit:
            parts.append(chunk)
            size, start = size + len(chunk), min(start + step, len(frame))
        elif step > 1:
            step //= 2
        else:
            truncated = True
    data = b"".join(parts) if size <= limit else b""
    return _artifact("csv", "result.csv", "text/csv", data, rows=start, truncated=truncated)


def _figures():
    """A PNG per open figure (up to MAX_FIGURES, with a note in the output)."""
    nums, artifacts = plt.get_fignums(), []
    for k, num in enumerate(nums[:MAX_FIGURES], 1):
        buf = io.BytesIO()
        plt.figure(num).savefig(buf, format="png", dpi=100, bbox_inches="tight")
        artifacts.append(_artifact("png", f"figure-{k}.png", "image/png", buf.getvalue()))
    if len(nums) > MAX_FIGURES:
        print(f"{len(nums) - MAX_FIGURES} more figures not shown (limit {MAX_FIGURES})")
    return artifacts
