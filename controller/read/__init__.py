"""Read models: what a group and its members look like to every reader.

One model (GroupView, MemberView) with two sources: this host's pinned maps
(views) and a Prometheus server that scrapes many hosts (prometheus_source).
Readers never write.
"""
