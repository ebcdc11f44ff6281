"""Result codes carried in the ``code`` field of every result message.

The values up to 0x1100 and 0x2000-0x2009 are the original project's and must
not change: senders in the field compare against them. New codes live in
ranges the original leaves free:

* 0x1004-0x100f: message and execution errors of remote commands,
* 0x200a-0x20ff: config replacement,
* 0x1200-0x12ff: authentication and freshness (signed commands),
* 0x1300-0x13ff: local monitoring,
* 0x1400-0x14ff: central detection (decisions of the central plugin).

For a command that ran, the code is the command's own exit status (0-255).
"""

from __future__ import annotations

import enum


class ResultCode(enum.IntEnum):
    SUCCESS = 0

    # -- the original's codes -------------------------------------------------
    NOT_IMPLEMENTED = 0x1000
    NO_SERVICES = 0x1001
    UNKNOWN_SERVICE = 0x1002
    UNKNOWN_COMMAND = 0x1003
    DUPLICATE_TASK = 0x1100

    # -- ours: bad messages and command execution ------------------------------
    MALFORMED_JSON = 0x1004
    """The payload is not a UTF-8 JSON object (a task_id was salvaged from it)."""
    MISSING_FIELD = 0x1005
    """A required field (timestamp, service, command) is absent."""
    INVALID_FIELD = 0x1006
    """A field has the wrong type or an unusable value."""
    COMMAND_TIMEOUT = 0x1007
    """The command ran past its timeout; its whole process group was killed."""
    COMMAND_START_FAILED = 0x1008
    """The command could not be started (no such program, bad working directory...)."""
    COMMAND_ABORTED = 0x1009
    """collectd shut down while the command ran; its process group was killed."""
    BUSY = 0x100A
    """Too many commands are queued; this one was not run."""

    # -- the original's config replacement codes ----------------------------------
    REPLACE_IN_PROGRESS = 0x2000
    REPLACE_WRITE_FAILED = 0x2001
    REPLACE_CONFIG_BROKEN = 0x2002
    REPLACE_STOP_FAILED = 0x2003
    REPLACE_PID_NOT_REMOVED = 0x2004
    REPLACE_BACKUP_FAILED = 0x2005
    REPLACE_SWAP_FAILED = 0x2006
    REPLACE_RECOVERED = 0x2007
    REPLACE_RECOVERY_FAILED = 0x2008
    REPLACE_NO_NEW_PID = 0x2009
    REPLACE_PATH_NOT_FOUND = 0x200A
    REPLACE_STOPPED_OUTSIDE = 0x2010
    """collectd was stopped from outside during the replacement: the admin's stop wins,
    it stays stopped (on the old config unless the new one had been confirmed)."""

    # -- ours: config replacement ----------------------------------------------------
    REPLACE_PID_FILE_MISMATCH = 0x200B
    """collectd runs on this config but the pid file (or service manager) does not name it."""

    # -- ours: authentication and freshness ---------------------------------------
    SIGNATURE_MISSING = 0x1201
    SIGNATURE_INVALID = 0x1202
    MESSAGE_EXPIRED = 0x1203
    MESSAGE_FROM_FUTURE = 0x1204

    # -- ours: local monitoring ---------------------------------------------------------
    RULE_SUSPENDED = 0x1300
    """A local rule's circuit breaker opened: it ran too often and suspended itself."""
    HANDLER_OVERRUN = 0x1301
    """A rule-file handler ran past its time budget (``Rules.Defaults.HandlerTimeBudget``)."""

    # -- ours: central detection ----------------------------------------------------------
    CENTRAL_SENT = 0x1400
    """The central plugin sent a repair to the host (the result follows)."""
    CENTRAL_HELD = 0x1401
    """A repair was held back by a fleet-wide limit (MaxConcurrentHosts, MaxHostsPerWindow)."""
    CENTRAL_HOST_OFFLINE = 0x1402
    """No repair sent: the host is offline (its status topic says so)."""
    CENTRAL_ABORTED = 0x1403
    """A rule stopped acting: too many of its repairs failed within its window."""
    CENTRAL_NO_RESULT = 0x1404
    """The host sent no result within ``ResultTimeout``."""
    CENTRAL_HOST_SILENT = 0x1405
    """No value from a host for the rule's ``Missing`` intervals."""
    CENTRAL_NOT_OFFERED = 0x1406
    """No repair sent: the host's status lists its services and this command is not among them."""
    CENTRAL_SEND_FAILED = 0x1407
    """The repair could not be handed to the broker (no connection)."""

    @property
    def hex(self) -> str:
        return f"0x{self.value:04x}"


def describe(code: int) -> str:
    """A short human name for ``code``; exit statuses are described as such."""
    try:
        return ResultCode(code).name.lower().replace("_", " ") if code else "success"
    except ValueError:
        return f"exit status {code}"
