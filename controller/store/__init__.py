"""The group store: a group's pinned state and every write to it.

Where a group lives in bpffs and its locks (state), what it is made with
(options), the pinned state read and published as one generation
(generation), a member's policy and whether it is live (policy), which
group a command means (lookup), creating and unloading it (lifecycle), its
members changed through one write path (membership, registration), its
weights and drain flags (steering), its flow table (flows), a worker
joining itself (join), and the state of namespaces that are gone
(stale_state).  `group` gathers the public names of these modules: it is
rpctl.controller.group.
"""
