"""Configuration: one TOML file plus ``INBOXLENS_*`` environment overrides.

- ``vault``: the vault's slice (its section and the providers' token endpoints);
  it imports nothing of ours but ``errors`` and ``paths``, so the vault stays small.
- ``build``: plain data to frozen dataclasses, strictly (unknown key or wrong type: an error naming it).
- ``schema``: the whole configuration, section by section, with named defaults.
- ``loader``: the file, the environment, and the checks that span fields.
"""
