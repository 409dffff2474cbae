"""The wire contract: framing and the byte-exact Xen structures. No I/O here."""

from .codec import *  # noqa: F401,F403
from .constants import *  # noqa: F401,F403
from .framing import Deframer, FramingError, Message  # noqa: F401
