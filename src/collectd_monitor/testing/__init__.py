"""Throwaway mosquitto and collectd processes for the tests, benchmarks and demo.

Nothing in the product imports this package (a test checks it); only the test
suite, ``bench/`` and the ``demo`` subcommand of the CLI do.
"""
