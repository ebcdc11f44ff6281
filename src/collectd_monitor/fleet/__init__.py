"""Fleet operations: presence of many hosts, and the history of what was sent to them.

``history`` keeps every request and result (SQLite or PostgreSQL), ``recorder``
fills it from the broker, ``presence`` reads the hosts' retained status.
"""
