import sys

from collectd_monitor.cli import main

sys.exit(main())
