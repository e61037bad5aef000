"""The error model: one line per error, whatever the library's message looks like."""

from __future__ import annotations

import pickle

from medtool.errors import InputError, InternalError, reason


def test_reason_is_one_line_without_a_traceback():
    """pydicom appends a formatted traceback to write errors and lists each decoder plugin's
    failure on its own line; an error line keeps neither the traceback nor the line breaks."""
    message = ("With tag (7FE0,0010) got exception: 'NoneType' object is not subscriptable\n"
               "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n")
    assert reason(TypeError(message)) == ("TypeError: With tag (7FE0,0010) got exception: "
                                          "'NoneType' object is not subscriptable")
    plugins = RuntimeError("Unable to decode:\n  pylibjpeg: bad length\n  pydicom: too short\n")
    assert reason(plugins) == "RuntimeError: Unable to decode: pylibjpeg: bad length; pydicom: too short"
    assert reason(ValueError("x" * 500), limit=20) == "ValueError: " + "x" * 17 + "..."
    assert reason(KeyError(), typed=False) == "KeyError"


def test_errors_keep_their_details_across_processes():
    error = pickle.loads(pickle.dumps(InputError("bad", path="a.dcm", hint="fix it")))
    assert str(error) == "a.dcm: bad, fix it"
    try:
        1 / 0
    except ZeroDivisionError as exc:
        internal = InternalError.from_exception(exc, path="b.dcm")
    again = pickle.loads(pickle.dumps(internal))
    assert str(again) == ("b.dcm: internal error: ZeroDivisionError: division by zero, run again "
                          "with --debug and report the traceback")
    assert "1 / 0" in again.traceback
