"""Bounded capture, head+tail truncation and what the in-process executor returns."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time

import pytest

from rlm_kernel.errors import StepTimeout
from rlm_kernel.executor import InProcessExecutor, step_deadline
from rlm_kernel.outputs import BoundedText, outputs_to_text, strip_ansi, truncate

OMITTED = re.compile(r"\[\.\.\. ([\d,]+) characters omitted \.\.\.\]")


def omitted(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in OMITTED.findall(text)]


def run(ex: InProcessExecutor, code: str, timeout: float | None = 30.0, step: int = 1):
    return asyncio.run(ex.execute(code, timeout=timeout, run_id="rtest", step=step))


# ------------------------------------------------------------------------------------ truncate


def test_truncate_leaves_short_text_alone() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abc", 100) == "abc"
    assert truncate("x" * 50, 0) == "x" * 50  # 0: no limit


def test_truncate_keeps_head_and_tail_and_counts_what_it_dropped() -> None:
    text = "".join(f"{i:05d}\n" for i in range(10_000))  # 60,000 chars
    out = truncate(text, 3000)
    head, tail = out.split("\n[... ", 1)[0], out.rsplit(" ...]\n", 1)[1]
    assert text.startswith(head) and len(head) == 2000
    assert text.endswith(tail) and len(tail) == 1000
    assert omitted(out) == [len(text) - 3000]
    assert "00000" in out and "09999" in out and "05000" not in out


def test_truncate_of_already_bounded_text_reports_the_real_loss() -> None:
    buf = BoundedText(head=1000, tail=500)
    buf.write("y" * 1_000_000)
    captured = buf.getvalue()
    assert omitted(captured) == [1_000_000 - 1500]
    shown = truncate(captured, 300)
    assert omitted(shown) == [1_000_000 - 300]  # not len(captured) - 300
    assert shown.count("characters omitted") == 1


# ---------------------------------------------------------------------------------- BoundedText


def test_bounded_text_under_limit_is_exact() -> None:
    buf = BoundedText(head=10, tail=5)
    for part in ["ab", "cd", "ef"]:
        assert buf.write(part) == len(part)
    assert buf.getvalue() == "abcdef" and buf.dropped == 0


@pytest.mark.parametrize("chunk", [1, 7, 333, 100_000])
def test_bounded_text_keeps_exact_head_and_tail(chunk: int) -> None:
    whole = "".join(f"<{i}>" for i in range(60_000))
    buf = BoundedText(head=1000, tail=700)
    for i in range(0, len(whole), chunk):
        buf.write(whole[i:i + chunk])
    assert buf.dropped == len(whole) - 1700
    expected = f"{whole[:1000]}\n[... {len(whole) - 1700:,} characters omitted ...]\n{whole[-700:]}"
    assert buf.getvalue() == expected


def test_bounded_text_many_small_writes_stay_cheap() -> None:
    """A print loop after the head is full must not copy the whole tail on every write."""
    buf = BoundedText(head=1000, tail=1_000_000)
    started = time.perf_counter()
    for _ in range(250_000):
        buf.write("0123456789")
    # Liveness: this is ~0.1 s; copying the 1 MB tail on each write took ~30 s.
    assert time.perf_counter() - started < 5.0
    assert buf.dropped == 2_500_000 - 1_001_000
    assert buf.getvalue().endswith("0123456789" * 100_000)


# ------------------------------------------------------------------------------ outputs_to_text


def test_outputs_to_text_reads_streams_results_and_errors() -> None:
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]},
        {"output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {},
         "execution_count": 1},
        {"output_type": "display_data", "data": {"image/png": "..."}, "metadata": {}},
        {"output_type": "error", "ename": "ValueError", "evalue": "bad",
         "traceback": ["\x1b[31mTraceback\x1b[0m", "ValueError: bad"]},
    ]
    assert outputs_to_text(outputs) == "a\nb\n42\n[image/png output]\nTraceback\nValueError: bad\n"
    assert strip_ansi("\x1b[1;32mok\x1b[0m") == "ok"


# ----------------------------------------------------------------------------------- executor


def test_executor_captures_stdout_stderr_and_last_expression() -> None:
    ex = InProcessExecutor()
    res = run(ex, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nx = 6\nx * 7")
    assert res.error is None
    kinds = [(o["output_type"], o.get("name")) for o in res.outputs]
    assert kinds == [("stream", "stdout"), ("stream", "stderr"), ("execute_result", None)]
    assert res.outputs[2]["data"]["text/plain"] == "42"
    assert ex.namespace["x"] == 6  # the namespace persists
    assert run(ex, "print(x + 1)").outputs[0]["text"] == "7\n"


def test_executor_five_megabyte_print_stays_bounded() -> None:
    ex = InProcessExecutor(capture_chars=300_000)
    res = run(ex, "print('x' * 5_000_000)")
    text = outputs_to_text(res.outputs)
    assert len(text) < 300_000 + 100
    assert omitted(text) == [5_000_001 - 300_000]
    shown = truncate(text, 20_000)
    assert len(shown) < 20_100
    assert omitted(shown) == [5_000_001 - 20_000]


def test_executor_error_has_traceback_of_the_step_only() -> None:
    ex = InProcessExecutor()
    res = run(ex, "def f(n):\n    return 10 / n\n\nprint('before')\nf(0)", step=3)
    assert res.error == "ZeroDivisionError: division by zero"
    err = res.outputs[-1]
    assert err["output_type"] == "error" and err["ename"] == "ZeroDivisionError"
    tb = "".join(err["traceback"])
    assert '<rlm step 3>", line 5' in tb and '<rlm step 3>", line 2, in f' in tb
    assert "executor.py" not in tb  # the engine's own frames are noise to the model
    assert res.outputs[0]["text"] == "before\n"  # output before the error is kept


def test_executor_syntax_error_and_sys_exit_are_fed_back() -> None:
    ex = InProcessExecutor()
    res = run(ex, "x = (1,")
    assert res.error and res.error.startswith("SyntaxError")
    res = run(ex, "import sys\nsys.exit(3)")
    assert res.error and "SystemExit" in res.error and not res.interrupted
    assert "sys.exit() does not end an RLM run" in outputs_to_text(res.outputs)


def test_executor_step_timeout_in_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    ex = InProcessExecutor()
    started = time.monotonic()
    res = run(ex, "n = 0\nwhile True:\n    n += 1", timeout=0.3)
    assert time.monotonic() - started < 10
    assert res.error and res.error.startswith("StepTimeout: step timed out after 0.3 s")
    assert ex.namespace["n"] > 0
    # Model code's `except Exception` cannot swallow the timeout.
    res = run(ex, "while True:\n    try:\n        pass\n    except Exception:\n        pass",
              timeout=0.3)
    assert res.error and res.error.startswith("StepTimeout")


def test_executor_step_timeout_in_worker_thread() -> None:
    box: dict[str, object] = {}

    def worker() -> None:
        box["res"] = run(InProcessExecutor(), "while True:\n    pass", timeout=0.3)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "a tight loop in a worker thread was never interrupted"
    res = box["res"]
    assert res.error and res.error.startswith("StepTimeout")  # type: ignore[attr-defined]


def test_step_deadline_restores_an_outer_alarm() -> None:
    """A pending SIGALRM timer (e.g. pytest-timeout's) survives a step with a deadline."""
    fired: list[int] = []
    outer = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's own alarm, if any
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        with step_deadline(5.0):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20.0 < left <= 30.0
        with pytest.raises(StepTimeout), step_deadline(0.05):
            while True:
                pass
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 20.0
        assert not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *outer)
