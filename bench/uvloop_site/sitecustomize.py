"""Runs every Python process that has this directory on PYTHONPATH on uvloop (bench/loops.py).

Python imports ``sitecustomize`` at start-up, before ``-m`` runs the module, so the children the
test helpers start unchanged (``python -m inboxlens.vault``, ``-m inboxlens.web``, the harvest
child, the baselines) get uvloop's policy, and ``asyncio.run`` in ``child.run`` makes a uvloop
loop: no line is added to their code, and none to the vault's import closure. Benchmarks only.
"""

import asyncio

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
