"""When a shell command line can run without a shell.

The original runs every command line through ``/bin/sh -c``. Most recovery
commands are plain (``systemctl restart nginx``), and for those the shell only
costs a fork and an exec. A line runs directly, as an argument list, when all
of these hold, which makes the result identical to the shell's:

* no character the shell gives a meaning to outside quotes or inside double
  quotes: ``| & ; < > ( ) $ ` \\ * ? [ ] { } ~ # ! =``, newline, carriage
  return and other control characters (so no pipes, redirections, variables,
  substitutions, globs, comments or assignments);
* single and double quotes only as ``shlex`` (POSIX mode) resolves them
  exactly, i.e. the quotes are balanced;
* the first word is neither a shell keyword nor a builtin (``echo``, ``exit``,
  ``cd``, ``test``... behave differently or do not exist as programs);
* the program is an absolute path or found on the command's ``PATH``
  (otherwise the shell's own "not found" message and status 127 are what the
  user expects), and the command does not change user (the shell would report
  a program that user may not execute with its own status 126).

To force a shell for a line that passes, write the command as an argument
list: ``["/bin/sh", "-c", "the line"]``.
"""

from __future__ import annotations

import re
import shlex
import shutil

__all__ = ["direct_argv"]

_SPECIAL = re.compile(r"[|&;<>()$`\\*?\[\]{}~#!=\x00-\x1f\x7f]")

_KEYWORDS = "if then else elif fi case esac for while until do done in function select time"
_BUILTINS = (  # POSIX special and regular builtins, and dash's own
    ". : break continue eval exec exit export readonly return set shift times trap unset "
    "alias bg cd command echo false fc fg getopts hash jobs kill local printf pwd read "
    "test [ true type ulimit umask unalias wait"
)
_SHELL_WORDS = frozenset(_KEYWORDS.split()) | frozenset(_BUILTINS.split())


def direct_argv(line: str, path: str | None) -> list[str] | None:
    """The argument list that runs ``line`` exactly as ``sh -c`` would, or None.

    ``path`` is the ``PATH`` the command runs with (None: this process's).
    """
    if _SPECIAL.search(line):
        return None
    try:
        words = shlex.split(line, posix=True)
    except ValueError:  # unbalanced quotes: the shell reports its own error
        return None
    if not words or words[0] in _SHELL_WORDS:
        return None
    if "/" in words[0] and not words[0].startswith("/"):
        return None  # relative to the command's cwd: leave it to the shell
    program = shutil.which(words[0], path=path)
    if program is None:
        return None
    return words
