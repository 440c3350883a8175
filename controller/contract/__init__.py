"""The contract: what every layer agrees on.

errors (the exception tree and its exit codes), refs (the library's parameters
and operations named inside messages) and abi (the ctypes mirror of
bpf/rpctl.h and the shape of every map).  Imports nothing of rpctl.
"""
