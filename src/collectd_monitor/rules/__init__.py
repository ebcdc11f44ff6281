"""Local monitoring: rules that detect faults on the host and repair them.

``model`` (what rules see), ``matching`` and ``index`` (finding rules for a
value), ``declarative`` (config.json's ``Rules``), ``pyfiles`` (rule files),
``condition`` (hits, hysteresis, missing data), ``gate`` (cooldown, circuit
breaker), ``dispatch`` (running a rule's command), ``notify`` (the result
notifications), ``engine`` (all of it together; ``acting`` is its gate-to-run
half), ``worker`` and ``overrun`` (rule-file handlers on worker threads within
a time budget) and ``loader`` (start-up from a config). Nothing here imports
collectd: ``collectd_monitor.local`` is the glue.
"""

from collectd_monitor.rules.declarative import GateSettings, RuleSet, parse_rules
from collectd_monitor.rules.engine import Engine
from collectd_monitor.rules.model import Action, Metric, Notice, Outgoing, Severity
from collectd_monitor.rules.pyfiles import RuleFiles, load_rule_files

__all__ = [
    "Action",
    "Engine",
    "GateSettings",
    "Metric",
    "Notice",
    "Outgoing",
    "RuleFiles",
    "RuleSet",
    "Severity",
    "load_rule_files",
    "parse_rules",
]
