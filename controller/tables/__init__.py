"""Pure tables and decisions: no system call, no file, no clock.

The weighted slot table, the CPU and RSS pin tables, the Toeplitz hash, QUIC-LB
server ids, member names from a format, and which members adaptive steering
throttles.  Imports only the contract.
"""
