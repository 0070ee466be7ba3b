"""InboxLens benchmarks: ``make bench`` (``python -m bench``), or ``python -m bench vault``.

The machines we run on are shared and noisy, so no number stands alone: each is printed
beside a baseline measured in the same run, as a ratio. Traffic stays on loopback and Unix
sockets, bounded in count and in time. A missed target is reported, never an exit status.
"""
