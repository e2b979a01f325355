"""The server's classroom: the teacher's key, the class's rules and data folder, and students' names.

One `Classroom` per server, shared by every browser session (the pages keep it in
`st.cache_resource`). Only a teacher may change what it holds; every change is checked here, so a
page cannot forget to.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace

from dlcore.runs.policy import ClassPolicy, max_job_seconds_from_env
from dlcore.runs.roles import NameBook, NotAllowed, Person, key_matches, teacher_by_default


class Classroom:
    """Thread-safe holder of the class's settings. `key` is the teacher key (None: no key set)."""

    def __init__(self, key: str | None = None, policy: ClassPolicy | None = None,
                 data_dir: str = "") -> None:
        self._key = key
        self._lock = threading.Lock()
        self._policy = policy or ClassPolicy(max_job_seconds=max_job_seconds_from_env())
        self._data_dir = data_dir
        self.names = NameBook()

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def __repr__(self) -> str:  # never the key
        return f"Classroom(has_key={self.has_key}, policy={self._policy!r})"

    def unlock(self, given: str) -> bool:
        """Whether `given` is the teacher key (constant-time comparison)."""
        return key_matches(given, self._key)

    def teacher_by_default(self, address: str | None) -> bool:
        return teacher_by_default(self._key, address)

    @property
    def policy(self) -> ClassPolicy:
        with self._lock:
            return self._policy

    def set_policy(self, policy: ClassPolicy, by: Person) -> None:
        self._require_teacher(by, "set the class's rules")
        policy.validate()
        with self._lock:
            self._policy = policy

    def set_max_job_seconds(self, seconds: float | None, by: Person) -> None:
        self.set_policy(replace(self.policy, max_job_seconds=seconds), by)

    @property
    def data_dir(self) -> str:
        with self._lock:
            return self._data_dir

    def set_data_dir(self, folder: str, by: Person) -> None:
        """The class's data folder, made absolute (so every message names it one way); "" for
        none."""
        self._require_teacher(by, "choose the data folder")
        folder = folder.strip()
        with self._lock:
            self._data_dir = os.path.abspath(os.path.expanduser(folder)) if folder else ""

    @staticmethod
    def _require_teacher(person: Person, action: str) -> None:
        if not person.teacher:
            raise NotAllowed(f"Only the teacher may {action}.")
