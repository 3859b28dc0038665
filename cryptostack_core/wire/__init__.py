"""What the client and the server share: the wire protocol and the vocabulary it carries.

Framing and messages (:mod:`.protocol`), the shared-memory path (:mod:`.shm`), error codes
(:mod:`.errors`), resource ids and enums (:mod:`.resources`), key permissions
(:mod:`.permissions`), the algorithm registry's data (:mod:`.algorithms`) and the
request/response interface every transport implements (:mod:`.transport`). Nothing here
imports the rest of the package.
"""
