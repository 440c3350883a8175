"""Operations: what rpctl does over time with groups, servers and processes.

Adopting a running server, the groups of a file reconciled, serve's loop and
its watch, the launcher of `rpctl run`, restarts and rollouts, waiting for a
drain, pinning, and telling a service manager how things go.
"""
