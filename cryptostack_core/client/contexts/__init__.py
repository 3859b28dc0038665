"""Client-side operation contexts, one module per kind."""
