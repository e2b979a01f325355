"""Who uses a session of the app: a display name, an owner id, and whether they are the teacher.

A session's owner id is a random id kept in that browser session; every run and job it starts
carries it, and only its owner or the teacher may rename, tag, delete or stop it. The teacher role
is unlocked with the key the server was started with (`DLLAB_TEACHER_KEY`, or `teacher_key` in
Streamlit's secrets), compared in constant time. With no key set, whoever opens the app on the
server's own machine is the teacher (one user at a desk: everything allowed, as before) and
everyone else a student.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dlcore.text import check_name

TEACHER_KEY_ENV = "DLLAB_TEACHER_KEY"
SECRETS_KEY = "teacher_key"


class NotAllowed(Exception):
    """An action on someone else's run or job, or a teacher's action by a student."""


@dataclass(frozen=True)
class Person:
    """The user of one browser session."""

    owner: str  # the session's random id: what runs and jobs are owned by
    name: str  # the display name the teacher sees
    teacher: bool = False

    def may_change(self, owner: str | None) -> bool:
        """Whether this person may rename, tag, delete or stop what `owner` owns (None: a run
        from before owners were kept, or from the command line: the teacher's alone)."""
        return self.teacher or (owner is not None and hmac.compare_digest(owner, self.owner))

    def require(self, owner: str | None, owner_name: str | None, action: str) -> None:
        """Raise NotAllowed, saying whose it is, unless this person may `action` it."""
        if not self.may_change(owner):
            whose = f"{owner_name}'s" if owner_name else "not yours"
            raise NotAllowed(f"Only its owner or the teacher may {action} it: it is {whose}.")


def teacher_key(secrets: Mapping[str, Any] | None = None) -> str | None:
    """The key that unlocks the teacher role: the environment's, else the secrets' (None: no key)."""
    key = os.environ.get(TEACHER_KEY_ENV, "")
    if not key and secrets is not None:
        try:
            key = str(secrets.get(SECRETS_KEY, "") or "")
        except Exception:  # noqa: BLE001 - a secrets file that cannot be read holds no key
            key = ""
    return key or None


def key_matches(given: str, key: str | None) -> bool:
    """Whether `given` is the teacher key, in time that does not depend on where they differ."""
    if not key or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


def is_local(address: str | None) -> bool:
    """Whether a browser at `address` is on the server's own machine (Streamlit gives None for a
    connection to localhost)."""
    if address is None or address == "":
        return True
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return address == "localhost"


def teacher_by_default(key: str | None, address: str | None) -> bool:
    """With no key set, the user on the server's machine is the teacher; with a key, nobody is
    until they give it."""
    return key is None and is_local(address)


def display_name(typed: str, fallback: str) -> str:
    """The name a person typed (checked like a run name: at most 80 characters), or `fallback`
    when they typed none. ValueError says what is wrong with it."""
    typed = typed.strip()
    if not typed:
        return fallback
    return check_name(typed)


class NameBook:
    """Hands out "Student 1", "Student 2", ... to sessions that give no name (thread-safe)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def next_name(self) -> str:
        with self._lock:
            return f"Student {next(self._numbers)}"
