"""Keep request contents out of the service log.

BentoML logs the traceback of a request it cannot parse, and pydantic's error text quotes
the offending input (``input_value=b'{"voters": [{"phone": ...'``). :class:`PrivacyFilter`
sits on the log handlers of the service process: a validation error is logged as one line
without its input, and every other message and traceback has phone numbers and e-mail
addresses replaced (``features.pii.scrub_text``) before it is written.
"""

from __future__ import annotations

import logging
import traceback

from pydantic import ValidationError

from features.pii import scrub_text


class PrivacyFilter(logging.Filter):
    """Drop request input from validation errors; scrub phones and e-mails from the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            kinds = sorted({e["type"] for e in exc.errors(include_input=False, include_context=False)})
            record.msg = f"{record.getMessage()}: request body rejected ({exc.error_count()} error(s): " \
                         f"{', '.join(kinds)}); input not logged"
            record.args, record.exc_info, record.exc_text = None, None, None
            return True
        if record.exc_info:
            record.exc_text = scrub_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        record.msg = scrub_text(record.getMessage())
        record.args = None
        return True


def install(logger_names: tuple[str, ...] = ("",)) -> None:
    """Add :class:`PrivacyFilter` to every handler of the given loggers (default: root)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, PrivacyFilter) for f in handler.filters):
                handler.addFilter(PrivacyFilter())
