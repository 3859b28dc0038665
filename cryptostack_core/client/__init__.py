"""The client: stack, operation contexts, resource guards and the unix-socket transport.

It never imports :mod:`cryptostack_core.server`; other transports (``inproc://``) are found
through the ``cryptostack.transports`` entry points.
"""
