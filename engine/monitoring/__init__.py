"""Monitoring: reference profiles, online drift against them, counted off the response path.

``profile`` (the reference of each column, ``profile.json`` in the graph's folder), ``layout``
(which columns of a plan are monitored and where they live), ``drift`` (live counts on the
reference bins over rolling windows, mergeable across workers; PSI, JS distance, shares).
Depends on the kernel and the graph's plain values only.
"""
