"""``python -m livekit.plugins.metadata.cli``: the ``lk-metadata`` command."""

from . import main

main()
