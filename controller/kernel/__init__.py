"""Kernel access: the system calls and files rpctl reads and writes.

The bpf syscall and bpffs, typed maps, compiling and loading the program
(headers, the kept-program cache, feature probes), sock_diag and the
listeners of a port, sockets, processes, jiffies and RSS devices.
Imports the contract and the pure tables, never a group.
"""
