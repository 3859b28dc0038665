"""The server: the daemon's front end, the service split by family, sessions, provider
selection and discovery, the key store, hooks, configuration and the in-process transport."""
