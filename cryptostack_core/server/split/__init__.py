"""Hybrid keys whose halves live on two providers, joined by the daemon.

:mod:`.plan` says which hybrid algorithms can be split and what each half is; :mod:`.choice`
picks the halves' providers (and explains why); :mod:`.keys` creates, imports and exports
split keys; :mod:`.states` runs contexts over them (the daemon as the combiner).
docs/hybrid.md, "Halves on two providers", is the user's view.
"""
