"""Configuration: one TOML file plus ``INBOXLENS_*`` environment overrides.

- ``vault``: the vault's slice; it imports nothing of ours but ``build``, ``errors`` and ``paths``.
- ``build``: plain data to frozen dataclasses, strictly (unknown key or wrong type: an error naming it).
- ``schema``: the whole configuration, section by section, with named defaults.
- ``loader``: the file, the environment, the defaults, and the checks that span fields.
"""
