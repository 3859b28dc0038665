"""The service's operations, one module per family, each over :class:`..core.ServiceCore`:
control (ping, status, explain, resources), contexts (hash, cipher, sign, verify, KEM,
agreement), keys (key management and randomness) and certificates."""
