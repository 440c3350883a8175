"""The group store: a group's pinned state and every write to it.

Where a group lives in bpffs and its locks, what it is made with, creating
and unloading it, its members, its weights and drain flags published as one
generation, its flow table, and the state of namespaces that are gone.
"""
