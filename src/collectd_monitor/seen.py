"""Memory of recently seen task ids, bounded in size.

A task id is remembered after its first run has finished, so a sender that
retries (or a broker that redelivers) cannot run the same task twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class SeenTasks:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[Hashable, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, task_id: Hashable) -> bool:
        """Remember ``task_id``; False if it was already remembered."""
        with self._lock:
            if task_id in self._ids:
                self._ids.move_to_end(task_id)
                return False
            self._ids[task_id] = None
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            return True

    def __contains__(self, task_id: Hashable) -> bool:
        with self._lock:
            return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
