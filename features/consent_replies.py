"""Free-text replies (to a text or a call) read as opt-outs: STOP, PARA, "no más", ...

A texting platform forwards what a voter answered; :func:`classify_reply` says whether it
revokes consent. The words come from two sources:

- the CTIA Messaging Principles and Best Practices (and its Short Code Monitoring
  Handbook): a message that is just ``STOP``, ``STOPALL``, ``UNSUBSCRIBE``, ``CANCEL``,
  ``END`` or ``QUIT`` opts out; ``START``, ``UNSTOP`` and ``YES`` opt back in; ``HELP``
  and ``INFO`` ask for help;
- the FCC's 2024 revocation order (FCC 24-24, 47 CFR 64.1200(a)(10) and (12)): consent
  may be revoked "by any reasonable means"; ``stop``, ``quit``, ``end``, ``revoke``,
  ``opt out``, ``cancel`` and ``unsubscribe`` in a reply are a revocation, and so is any
  reply a reasonable person would read as one.

Spanish equivalents are read the same way (``PARA``, ``PARAR``, ``ALTO``, ``DETENER``,
``CANCELAR``, ``BAJA``, ``NO MÁS``, ...). Case, accents, punctuation and emoji do not matter.

The reading (fail closed)
-------------------------
``opt_out``
    The reply is exactly one of the opt-out words or phrases, or contains one of the
    unambiguous ones (``stop``, ``unsubscribe``, ``cancel``, ``quit``, ``revoke``,
    ``opt out``, ``cancelar``, ``detener``, ``no más``, ``dar de baja``, ...) or a plain
    request such as "remove me", "do not text", "no me llamen". A negated keyword
    ("don't stop") is still read as an opt-out: a missed revocation costs far more than
    an unneeded one.
``opt_in`` / ``help``
    The reply is exactly an opt-in (``START``, ``UNSTOP``, ``YES``, ``SÍ``) or a help word
    (``HELP``, ``INFO``, ``AYUDA``). Neither changes consent: an opt-in reply does not by
    itself grant consent (the consent table has no scope for it); the texting platform
    records consent as a ``consent`` event (``source`` ``opt_in_keyword``, with its scope).
``unclear``
    Anything else, including words that are opt-outs only on their own (``end``, ``para``,
    ``alto``, ``baja``, ``fin``) inside a longer reply. An unclear reply is kept for a
    person to review and revokes automated contact in the meantime.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from features.consent import OTHER_KEYWORD

# The whole reply is one of these -> opt-out; the value is the keyword recorded (the
# consent table's list: STOP, QUIT, END, REVOKE, OPT OUT, CANCEL, UNSUBSCRIBE).
OPT_OUT_REPLIES: dict[str, str] = {
    # CTIA
    "STOP": "STOP", "STOPALL": "STOP", "STOP ALL": "STOP", "UNSUBSCRIBE": "UNSUBSCRIBE", "CANCEL": "CANCEL",
    "END": "END", "QUIT": "QUIT",
    # FCC 24-24
    "REVOKE": "REVOKE", "OPT OUT": "OPT OUT", "OPTOUT": "OPT OUT",
    # Spanish
    "PARA": "STOP", "PARAR": "STOP", "PARE": "STOP", "ALTO": "STOP", "DETENER": "STOP", "DETENTE": "STOP",
    "BASTA": "STOP", "NO MAS": "STOP", "YA NO": "STOP", "CANCELAR": "CANCEL", "CANCELA": "CANCEL",
    "BAJA": "UNSUBSCRIBE", "DAR DE BAJA": "UNSUBSCRIBE", "DARME DE BAJA": "UNSUBSCRIBE",
    "DESUSCRIBIR": "UNSUBSCRIBE", "DESUSCRIBIRME": "UNSUBSCRIBE", "FIN": "END", "TERMINAR": "END",
    "SALIR": "QUIT", "REVOCAR": "REVOKE",
}
# Found anywhere in a longer reply -> opt-out (words that have no other common meaning there).
OPT_OUT_PHRASES: dict[str, str] = {
    "STOP": "STOP", "STOPALL": "STOP", "UNSUBSCRIBE": "UNSUBSCRIBE", "CANCEL": "CANCEL", "QUIT": "QUIT",
    "REVOKE": "REVOKE", "OPT OUT": "OPT OUT", "OPTOUT": "OPT OUT", "PARAR": "STOP", "DETENER": "STOP",
    "NO MAS": "STOP", "CANCELAR": "CANCEL", "DAR DE BAJA": "UNSUBSCRIBE", "DARME DE BAJA": "UNSUBSCRIBE",
    "DE BAJA": "UNSUBSCRIBE", "DESUSCRIBIR": "UNSUBSCRIBE", "DESUSCRIBIRME": "UNSUBSCRIBE", "REVOCAR": "REVOKE",
}
# Plain requests not to be contacted (any reasonable means): recorded with keyword OTHER.
_PLAIN_REQUESTS = re.compile(
    r"\b(?:REMOVE ME|TAKE ME OFF|LEAVE ME ALONE|LOSE MY NUMBER|WRONG NUMBER|"
    r"(?:DO NOT|DONT|NEVER) (?:EVER )?(?:TEXT|TEXTING|CALL|CALLING|CONTACT|CONTACTING|MESSAGE|MESSAGING|"
    r"EMAIL|SEND|SENDING)|NO MORE (?:TEXTS?|MESSAGES?|CALLS?)|"
    r"NO ME (?:ESCRIBA|ESCRIBAN|LLAME|LLAMEN|MANDE|MANDEN|ENVIE|ENVIEN|CONTACTE|CONTACTEN|MOLESTE|MOLESTEN)|"
    r"DEJEN DE|DEJE DE|NUMERO EQUIVOCADO|BORRA MI|BORREN MI|ELIMINA MI|ELIMINEN MI)\b"
)
OPT_IN_REPLIES = frozenset({"START", "UNSTOP", "YES", "SI"})
HELP_REPLIES = frozenset({"HELP", "INFO", "AYUDA"})
MAX_REPLY_CHARS = 1600  # ten concatenated SMS segments


class ReplyKind(StrEnum):
    """What a reply says about consent."""

    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"
    unclear = "unclear"


@dataclass(frozen=True)
class ReplyReading:
    """The reading of one reply.

    Attributes
    ----------
    kind : ReplyKind
    keyword : str or None
        The opt-out keyword recorded with the revocation (``STOP``, ..., or ``OTHER``);
        None for opt-in and help replies.
    """

    kind: ReplyKind
    keyword: str | None

    @property
    def revokes(self) -> bool:
        """True if the reply revokes automated contact (an opt-out, or unclear until reviewed)."""
        return self.kind in (ReplyKind.opt_out, ReplyKind.unclear)


def normalize_reply(text: str) -> str:
    """Upper case, no accents, apostrophes dropped, anything not a letter or digit a single space."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    plain = re.sub(r"['’`´]", "", plain.upper())
    return " ".join(re.sub(r"[^A-Z0-9]+", " ", plain).split())


def classify_reply(text: str) -> ReplyReading:
    """Read a free-text reply as an opt-out, an opt-in, a help request, or unclear.

    Parameters
    ----------
    text : str
        The reply as the voter wrote it (at most :data:`MAX_REPLY_CHARS` characters).

    Returns
    -------
    ReplyReading

    Raises
    ------
    TypeError, ValueError
        ``text`` is not a string, or too long.

    Examples
    --------
    >>> classify_reply("Stop!").kind, classify_reply("No más, gracias").keyword
    (<ReplyKind.opt_out: 'opt_out'>, 'STOP')
    >>> classify_reply("para mañana").kind
    <ReplyKind.unclear: 'unclear'>
    """
    if not isinstance(text, str):
        raise TypeError(f"a reply must be text, got {type(text).__name__}")
    if len(text) > MAX_REPLY_CHARS:
        raise ValueError(f"a reply may have at most {MAX_REPLY_CHARS} characters, got {len(text)}")
    words = normalize_reply(text)
    if words in OPT_OUT_REPLIES:
        return ReplyReading(ReplyKind.opt_out, OPT_OUT_REPLIES[words])
    padded = f" {words} "
    found = [(padded.find(f" {p} "), keyword) for p, keyword in OPT_OUT_PHRASES.items() if f" {p} " in padded]
    if found:
        return ReplyReading(ReplyKind.opt_out, min(found)[1])  # the first opt-out phrase of the reply
    if _PLAIN_REQUESTS.search(words):
        return ReplyReading(ReplyKind.opt_out, OTHER_KEYWORD)
    if words in OPT_IN_REPLIES:
        return ReplyReading(ReplyKind.opt_in, None)
    if words in HELP_REPLIES:
        return ReplyReading(ReplyKind.help, None)
    return ReplyReading(ReplyKind.unclear, OTHER_KEYWORD)
