"""Start-up of local monitoring from a loaded config, shared by the plugin and test-rules.

Every problem with a rule is logged as one line naming the file (and key or
line) and that rule is left out; the rest of the rules still run. Only a
config that cannot be loaded at all keeps the plugin idle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collectd_monitor.config import MonitorConfig
from collectd_monitor.executor import CommandExecutor, Job
from collectd_monitor.rules.declarative import RuleSet, parse_rules
from collectd_monitor.rules.dispatch import Emit
from collectd_monitor.rules.engine import Engine
from collectd_monitor.rules.overrun import OverrunGuard
from collectd_monitor.rules.pyfiles import RuleFiles, load_rule_files
from collectd_monitor.rules.threshold import Datasets, Plan, compile_rules
from collectd_monitor.rules.worker import HandlerPool
from collectd_monitor.runtime import ExecutorLease, executors, load_for_plugin

NAME = "collectd_monitor.local"
THRESHOLD_KEY = "ThresholdRules"
"""``<Module>`` key: the digest ``collectd-conf --local`` prints beside the threshold block."""
log = logging.getLogger(NAME)


def load_rules(config: MonitorConfig) -> tuple[RuleSet, RuleFiles, list[str]]:
    """The declarative rules and rule files of ``config``, and one line per problem."""
    rules = parse_rules(config.rules, config.services, source=config.source)
    files = load_rule_files(config.local_monitor_config_dir)
    errors = [f"{error}; rule left out" for error in rules.errors] + list(files.errors)
    return rules, files, errors


@dataclass
class LocalMonitor:
    engine: Engine
    lease: ExecutorLease
    pool: HandlerPool | None = None

    @property
    def executor(self) -> CommandExecutor:
        return self.lease.executor

    def stop(self) -> None:
        """Stop the handler workers (never joined: a handler may hang for good) and stop
        submitting; the shared executor stops once the other plugin is done too."""
        if self.pool is not None:
            self.pool.stop()
        self.lease.release()


def threshold_plan(
    rules: RuleSet,
    datasets: Datasets,
    expected: str | None,
    *,
    central: bool = False,
    logger: logging.Logger = log,
) -> Plan:
    """The value rules collectd's threshold plugin judges here: none unless the
    operator pasted the threshold block made for exactly these rules (``expected``,
    the ``ThresholdRules`` digest). A mismatch keeps every rule in Python: a stale
    block must never silence a rule. ``central``: the central plugin's rules."""
    plan = compile_rules(rules.values, datasets, central=central)
    command = f"collectd-monitor collectd-conf --{'central' if central else 'local'}"
    if not expected:
        if plan.compiled:
            logger.info(
                "%d value rule(s) could be judged in C by collectd's threshold plugin: see %s",
                len(plan.compiled),
                command,
            )
        return Plan()
    if expected != plan.digest:
        logger.error(
            "%s %r does not name the threshold block of these rules (%r): every value "
            "rule is judged in Python; print both blocks again with %s",
            THRESHOLD_KEY,
            expected,
            plan.digest,
            command,
        )
        return Plan()
    for item in plan.compiled:
        logger.info("value rule %s: judged by collectd's threshold plugin", item.rule.name)
    for kept in plan.kept:
        logger.info("value rule %s: judged in Python: %s", kept.rule.name, kept.reason)
    return plan


def collectd_datasets(collectd: Any) -> Datasets:
    """Data sets from the running collectd (``collectd.get_dataset``)."""

    def datasets(type_: str) -> list[tuple[str, str, float, float]] | None:
        try:
            found = collectd.get_dataset(type_)
        except Exception:
            return None
        nan = float("nan")
        return [
            (
                str(n),
                str(k).lower(),
                nan if lo is None else float(lo),
                nan if hi is None else float(hi),
            )
            for n, k, lo, hi in found
        ]

    return datasets


def start_local(
    options: Mapping[str, Any], *, emit: Emit, collectd: Any = None, offline: bool = False
) -> LocalMonitor | None:
    ours = {k: v for k, v in options.items() if k.lower() == THRESHOLD_KEY.lower()}
    rest = {k: v for k, v in options.items() if k not in ours}
    config = load_for_plugin(NAME, rest, collectd=collectd)
    if config is None:
        return None
    rules, files, errors = load_rules(config)
    for line in errors:
        log.error("%s", line)
    for line in files.warnings:
        log.warning("%s", line)
    log.info(
        "%d value rule(s), %d notification rule(s), %d metric handler(s), "
        "%d notification handler(s) from %d rule file(s)",
        len(rules.values),
        len(rules.notifications),
        len(files.metric),
        len(files.notification),
        len(files.files),
    )
    if offline:
        log.info("offline mode (config validation run): rules loaded, not monitoring")
        return None
    lease = executors.acquire(config)
    executor = lease.executor

    def runner(spec: Any, on_done: Any) -> None:
        executor.submit(Job(spec=spec, on_done=on_done))

    expected = next((str(v) for v in ours.values()), None)
    plan = threshold_plan(rules, collectd_datasets(collectd), expected)
    engine = Engine(config, rules, files, runner=runner, emit=emit, plan=plan)
    pool = None
    if files.metric or files.notification:
        guard = OverrunGuard(rules.handler_time_budget, rules.defaults)
        pool = HandlerPool(engine.call_handler, engine.handled, emit, guard)
        engine.use_pool(pool)
        pool.start()
        log.info(
            "rule-file handlers run on a worker thread, %g s time budget per call",
            rules.handler_time_budget,
        )
    if not engine.wants_values and not engine.wants_notifications:
        log.warning(
            "no rules: nothing to monitor (LocalMonitorConfigDir %s, key Rules)",
            config.local_monitor_config_dir or "not set",
        )
    return LocalMonitor(engine, lease, pool)
