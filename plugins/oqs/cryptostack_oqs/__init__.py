"""cryptostack provider for post-quantum algorithms on liboqs (see :mod:`.provider`)."""
