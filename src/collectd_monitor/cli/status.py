"""Exit statuses of the subcommands that talk to a host (see ``collectd-monitor --help``)."""

EXIT_OK = 0
EXIT_REMOTE_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_CONNECTION = 4
